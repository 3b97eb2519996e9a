package handover

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strconv"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"
)

// StateVersion is the layout of the state this binary hands over and the
// newest it can take over. MinStateVersion is the oldest it can still read.
// Every change to the layout raises StateVersion: an older binary decodes a
// newer state without an error, dropping what it does not know, so only the
// hello check before execve can refuse it (upgrade's TestStateLayout keeps
// each version's layout). A change that drops support for reading old state
// raises MinStateVersion.
//
// Version 2: what version 1 binaries (up to 2026-12-02) did not all hand
// over (terminals, file:// and binary:// logs, OOM scope, stdin's last byte,
// ...), under a number those binaries refuse; layout 1 is still read.
// Version 3: a container's cgroup and its OOM scope's marks, so that a
// stopped container keeps its Stats across an upgrade and a kill during the
// switch is still told apart, and a terminal's end of input not written yet;
// layouts 1 and 2 are read (both find the cgroup again from a running init).
// Version 4: a v1 OOM notification whose kill was still being looked for, so
// that the successor looks on, and the v2 OOM scope's count of the limits
// below a container; layouts 1 to 3 are read.
// Version 5: a container's stall_timeout option, for its execs to come;
// layouts 1 to 4 are read (their containers take the default).
// Version 6: the shim's own read ends on a binary:// logger's pipes, so that
// a process whose logger exited or closed a pipe is not killed by SIGPIPE
// after the switch; layouts 1 to 5 are read (their successor holds none).
// Version 7: the tasks a `start` announced whose Create has not come, so
// that the successor does not leave under it; layouts 1 to 6 are read
// (nothing was expected by their binaries' daemons).
// Version 8: a terminal's output to a file:// log or a binary:// logger
// (TerminalState.Log); and a container may now be created and not started
// (its init the runtime's process waiting for its start), which a binary
// reading at most 7 would take as one that never ran, claiming no exit and
// watching no cgroup; layouts 1 to 7 are read (their binaries handed over
// neither).
// Version 9: an output to a plain file (OutputState.Plain), which binaries
// reading at most 8 would take for a client's FIFO; layouts 1 to 8 are read
// (their binaries refused to hand one over).
// Version 10: what the exited init and execs of a container without a
// cgroup left in their sessions (ContainerState.ExitedSessions), so that
// the successor still lists and kills those processes; layouts 1 to 9 are
// read (their binaries kept no such record).
// Version 11: the process group of a binary:// logger that exited leaving
// a child reading its pipes (LoggerEndsState.Group), so that the successor
// drains them only once the group is empty; layouts 1 to 10 are read (their
// binaries drained them at the logger's exit).
// Version 12: what a systemd-managed container last read of its memory
// events (ContainerState.OOMEvents), so that Stats of one whose scope
// systemd removed with its init still answers after the switch, and the
// marks that tell the OOM kill of such an init during the switch (the
// limit's last growth, the parent's count, the kernel log's mark), with
// the kernel's log itself (service.State.OOMLog: its descriptor, read on
// from the predecessor's last read); layouts 1 to 11 are read (their
// stopped containers answer with the kills alone, their marks are taken
// anew and the log opened anew). The log is not handed to an older build
// (upgrade's dropUnread).
// Version 13: the CRIU binary a container's runtime options name
// (process.RuntimeState.Criu, the runc options' criu_path); layouts 1 to 12
// are read (their binaries ignored the option).
// Version 14: the client FIFOs of ended outputs whose bytes wait for the
// client's next reader (io.PipesState.Lingering), whose write ends the
// successor holds on; layouts 1 to 13 are read (their binaries handed none
// over). They are not handed to an older build (upgrade's dropUnread).
const (
	StateVersion    = 14
	MinStateVersion = 1
)

// OldestWrittenVersion is the oldest layout this binary writes its state
// in: a daemon holding nothing that only a newer layout carries (upgrade
// works out what its state needs) writes it as this one, so that older
// builds, which read no further, can still take it over. A downgrade is
// then refused only while such a thing is there (the thing is named). It is
// raised when a new layout's addition is always present, or when its rule
// in upgrade's layoutNeeded cannot be written.
const OldestWrittenVersion = 7

// EnvFD names the environment variable through which a daemon tells its
// successor where the handed-over state is (a descriptor number).
const EnvFD = "EXAMPLE_SHIM_HANDOVER_FD"

// Build names a binary.
type Build struct {
	Version  string `json:"version"`
	Revision string `json:"revision"`
}

// Envelope wraps the daemon's state with its layout version and who wrote
// it. Body is the daemon's own description (launch defines it).
type Envelope struct {
	StateVersion int             `json:"stateVersion"`
	From         Build           `json:"from"`
	Body         json.RawMessage `json:"body"`
}

// WriteEnvelope stores env in an anonymous memory file kept across execve
// and returns its descriptor number, for EnvFD.
func WriteEnvelope(env Envelope, fds *FDs) (int, error) {
	data, err := json.Marshal(env)
	if err != nil {
		return -1, fmt.Errorf("handover: encode state: %w", err)
	}
	mfd, err := unix.MemfdCreate("shim-handover", unix.MFD_CLOEXEC)
	if err != nil {
		return -1, fmt.Errorf("handover: state file: %w", err)
	}
	f := os.NewFile(uintptr(mfd), "shim-handover")
	if _, err := f.Write(data); err != nil {
		f.Close()
		return -1, fmt.Errorf("handover: write state: %w", err)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		f.Close()
		return -1, fmt.Errorf("handover: rewind state: %w", err)
	}
	return fds.Keep(f)
}

// ReadEnvelope reads the state a predecessor left at the descriptor that
// EnvFD names, and closes it. A layout this binary cannot read is refused
// (FailedPrecondition): Hello should have prevented that.
func ReadEnvelope(fdText string) (Envelope, error) {
	var env Envelope
	fd, err := strconv.Atoi(fdText)
	if err != nil || fd < 3 {
		return env, fmt.Errorf("handover: %s=%q is not a descriptor: %w", EnvFD, fdText, errdefs.ErrInvalidArgument)
	}
	f := os.NewFile(uintptr(fd), "shim-handover")
	defer f.Close()
	data, err := io.ReadAll(f)
	if err != nil {
		return env, fmt.Errorf("handover: read state: %w", err)
	}
	if err := json.Unmarshal(data, &env); err != nil {
		return env, fmt.Errorf("handover: decode state: %w", err)
	}
	if err := CanRead(env.StateVersion); err != nil {
		return env, err
	}
	return env, nil
}

// CanRead reports whether this binary reads state of layout v.
func CanRead(v int) error {
	if v < MinStateVersion || v > StateVersion {
		return fmt.Errorf("handover: state layout %d, this binary reads %d to %d: %w", v, MinStateVersion, StateVersion, errdefs.ErrFailedPrecondition)
	}
	return nil
}
