package upgrade

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"

	"github.com/example/containerd-shim-example-v2/events"
	"github.com/example/containerd-shim-example-v2/handover"
	"github.com/example/containerd-shim-example-v2/internal/selftrim"
	introspect "github.com/example/containerd-shim-example-v2/proto/introspect/v1"
	upgradeapi "github.com/example/containerd-shim-example-v2/proto/upgrade/v1"
	"github.com/example/containerd-shim-example-v2/reaper"
	"github.com/example/containerd-shim-example-v2/sandbox"
	"github.com/example/containerd-shim-example-v2/service"
)

// Named limits of the switch. Each step that cannot finish in time undoes
// the steps before it, and the daemon serves on with its own binary.
const (
	listenerPauseTimeout = time.Second
	// connPauseTimeout bounds the wait for requests in flight to be
	// answered (a Create runs the OCI runtime: seconds at worst).
	connPauseTimeout = 10 * time.Second
	// reaperPauseTimeout bounds exit callbacks still running (an init's
	// exit waits for its execs' exits and may run the runtime's kill --all;
	// the reaper reaps on for them meanwhile: normally milliseconds).
	reaperPauseTimeout = 2 * time.Second
	relayHaltTimeout   = 2 * time.Second
	eventHoldTimeout   = 6 * time.Second
)

// maxHold bounds UpgradeRequest.hold_ms (a test knob).
const maxHold = 10 * time.Second

// HoldLogLine is logged when a switch with a hold has paused everything and
// begins to hold.
const HoldLogLine = "everything paused, test hold begins"

// Parts are what the daemon owns and an upgrade pauses and hands over.
type Parts struct {
	Listener *handover.Listener
	Conns    *handover.Conns
	Reaper   *reaper.Reaper
	Events   *events.Queue
	Service  *service.Service
	// Pods served through the Sandbox API (containerd 2.x sandboxer = "shim").
	Pods *sandbox.Service
	// HandlersIdle waits (at most the given time) until no request's
	// handler runs (ttrpcserver.Server.HandlersIdle); nil: not asked.
	HandlersIdle func(time.Duration) bool
}

// Daemon is one daemon's upgrade service.
//
// Locking: mu guards busy and the record; the switch itself runs in one
// goroutine at a time (busy).
type Daemon struct {
	parts  Parts
	build  handover.Build
	binary string   // the path the daemon was started from
	args   []string // its command line, for the next binary

	mu     sync.Mutex
	busy   bool
	record record
}

// record is what introspection reports of the daemon's upgrades.
type record struct {
	count   uint32    // upgrades completed by this process
	from    string    // the build the last one replaced
	at      time.Time // when it completed
	pause   time.Duration
	lastErr string // why the last attempt past its checks failed
}

// New returns the upgrade service of a daemon started as args from binary.
func New(parts Parts, build handover.Build, binary string, args []string) *Daemon {
	return &Daemon{parts: parts, build: build, binary: binary, args: args}
}

// Record is the daemon's upgrade record, for introspection.
func (d *Daemon) Record() *introspect.Upgrade {
	d.mu.Lock()
	defer d.mu.Unlock()
	r := d.record
	out := &introspect.Upgrade{Count: r.count, FromVersion: r.from, PauseUs: uint64(r.pause.Microseconds()), LastError: r.lastErr}
	if !r.at.IsZero() {
		out.AtUnixMs = uint64(r.at.UnixMilli())
	}
	return out
}

// Upgrade checks the new binary and what would be handed over; if all is
// well it answers at once and switches right after the answer is sent (the
// connection pause waits for it). Refusals leave the daemon untouched.
func (d *Daemon) Upgrade(ctx context.Context, req *upgradeapi.UpgradeRequest) (*upgradeapi.UpgradeResponse, error) {
	binary := req.Binary
	if binary == "" {
		binary = d.binary
	}
	if !filepath.IsAbs(binary) {
		return nil, fmt.Errorf("new binary %q: an absolute path is needed: %w", binary, errdefs.ErrInvalidArgument)
	}
	d.mu.Lock()
	if d.busy {
		d.mu.Unlock()
		return nil, fmt.Errorf("an upgrade is in progress: %w", errdefs.ErrFailedPrecondition)
	}
	d.busy = true
	count := d.record.count
	d.mu.Unlock()
	started := false
	defer func() {
		if !started {
			d.setBusy(false)
		}
	}()

	id, err := identify(binary)
	if err != nil {
		return nil, fmt.Errorf("new binary: %w: %w", err, errdefs.ErrFailedPrecondition)
	}
	hello, err := handover.AskHello(ctx, d.parts.Reaper, binary)
	if err != nil {
		return nil, err
	}
	if err := id.stillAt(binary); err != nil {
		return nil, err
	}
	// Some layout both read, or no switch: which one, the state says once
	// everything is paused (describe).
	if _, err := hello.Newest(handover.OldestWrittenVersion, handover.StateVersion); err != nil {
		return nil, err
	}
	if err := d.handable(); err != nil {
		return nil, err
	}
	hold := time.Duration(req.HoldMs) * time.Millisecond
	if hold > maxHold {
		return nil, fmt.Errorf("hold of %v: at most %v: %w", hold, maxHold, errdefs.ErrInvalidArgument)
	}
	started = true
	// From here the record speaks of this attempt: a failure of an earlier
	// one, still there, would be read as this one's by an `upgrade` command
	// polling before the switch has paused the listener.
	d.mu.Lock()
	d.record.lastErr = ""
	d.mu.Unlock()
	go d.switchOver(binary, id, hello, hold)
	return &upgradeapi.UpgradeResponse{Pid: uint32(os.Getpid()), FromVersion: d.build.Version, ToVersion: hello.Version,
		Binary: binary, UpgradesBefore: count}, nil
}

// binaryID tells one file from another, and from itself rewritten: the
// hello runs the new binary by its path, and the switch executes that path
// again, seconds later. (Not the change time: a chmod is no new binary, and
// one that made it unexecutable fails the execve, which is undone.)
type binaryID struct {
	dev, ino uint64
	size     int64
	mtime    unix.Timespec
}

func identify(path string) (binaryID, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return binaryID{}, &os.PathError{Op: "stat", Path: path, Err: err}
	}
	return idOf(&st), nil
}

func idOf(st *unix.Stat_t) binaryID {
	return binaryID{dev: st.Dev, ino: st.Ino, size: st.Size, mtime: st.Mtim}
}

// stillAt is FailedPrecondition unless path still names the file id was
// taken of, unchanged.
func (id binaryID) stillAt(path string) error {
	now, err := identify(path)
	if err != nil {
		return fmt.Errorf("new binary: %w: %w", err, errdefs.ErrFailedPrecondition)
	}
	return id.is(now, path)
}

// is is FailedPrecondition unless now, taken of the binary at path, is id.
func (id binaryID) is(now binaryID, path string) error {
	if now != id {
		return fmt.Errorf("new binary: %s was replaced or changed since it answered the hello: %w", path, errdefs.ErrFailedPrecondition)
	}
	return nil
}

func (d *Daemon) setBusy(b bool) {
	d.mu.Lock()
	d.busy = b
	d.mu.Unlock()
}

// handable is what can be checked before anything stops.
func (d *Daemon) handable() error {
	if _, windows := d.parts.Reaper.Watched(); windows > 0 {
		return fmt.Errorf("a process is being launched: %w", errdefs.ErrFailedPrecondition)
	}
	if d.parts.Pods != nil {
		if err := d.parts.Pods.Handable(); err != nil {
			return err
		}
	}
	return d.parts.Service.Handable()
}

// state is the daemon's description for its successor (handover.Envelope's
// body, layout handover.StateVersion).
type state struct {
	Listener handover.ListenerState `json:"listener"`
	Conns    []handover.ConnState   `json:"conns"`
	Events   events.QueueState      `json:"events"`
	Service  service.State          `json:"service"`
	Pods     sandbox.State          `json:"pods"`
	PausedAt time.Time              `json:"pausedAt"`
	Upgrades uint32                 `json:"upgrades"`
	Binary   string                 `json:"binary"` // what the next one was started from
	Args     []string               `json:"args"`
}

// switchOver pauses everything in order, hands it over and executes
// binary; on any failure it undoes what it did and records why.
func (d *Daemon) switchOver(binary string, id binaryID, hello handover.Hello, hold time.Duration) {
	defer d.setBusy(false)
	p := d.parts
	pausedAt := time.Now()
	var undo []func()
	fail := func(err error) {
		for i := len(undo) - 1; i >= 0; i-- {
			undo[i]()
		}
		slog.Error("upgrade failed; serving on with this binary", "binary", binary, "error", err)
		d.mu.Lock()
		d.record.lastErr = err.Error()
		d.mu.Unlock()
	}
	undo = append(undo, p.Listener.Resume) // a failed Pause leaves it paused too
	if err := p.Listener.Pause(listenerPauseTimeout); err != nil {
		fail(err)
		return
	}
	if err := p.Conns.PauseAll(connPauseTimeout); err != nil {
		fail(err)
		return
	}
	undo = append(undo, p.Conns.ResumeAll)
	// The paused connections' requests are answered or parked, but one
	// whose client hung up is no longer among them, and the handlers of
	// its requests run on: wait for them, as for the others.
	if p.HandlersIdle != nil && !p.HandlersIdle(connPauseTimeout) {
		fail(fmt.Errorf("requests still being handled after %v", connPauseTimeout))
		return
	}
	// Checked again: a request served before the pause may have changed it.
	if err := d.handable(); err != nil {
		fail(err)
		return
	}
	if !p.Reaper.Pause(reaperPauseTimeout) {
		fail(fmt.Errorf("exit callbacks still running after %v", reaperPauseTimeout))
		return
	}
	undo = append(undo, p.Reaper.Resume)
	if err := p.Service.Halt(relayHaltTimeout); err != nil {
		fail(err)
		return
	}
	undo = append(undo, p.Service.Restart)
	if !p.Events.Hold(eventHoldTimeout) {
		fail(fmt.Errorf("event in flight to containerd for over %v", eventHoldTimeout))
		return
	}
	undo = append(undo, p.Events.Release)
	if hold > 0 {
		// Tests wait for this line (containerd copies it into its log) to act
		// inside the switch rather than guess when it begins.
		slog.Info("upgrade: "+HoldLogLine, "hold", hold)
		time.Sleep(hold)
	}

	fds := &handover.FDs{}
	undo = append(undo, fds.Release)
	fd, err := d.describe(fds, pausedAt, binary, hello)
	if err != nil {
		fail(fmt.Errorf("describe the daemon: %w", err))
		return
	}
	// The file executed must be the one that answered the hello (a second
	// install may have replaced it since): past execve there is no way back.
	exe, err := openChecked(binary, id)
	if err != nil {
		fail(err)
		return
	}
	env := append(os.Environ(), fmt.Sprintf("%s=%d", handover.EnvFD, fd))
	slog.Info("upgrading in place", "binary", binary, "from", d.build.Version, "fds", fds.Len())
	argv := append([]string{binary}, d.args[1:]...)
	selftrim.DisableTHPForExec() // as start does: see selftrim.NoHugePages
	err = unix.Exec(exe.path, argv, env)
	selftrim.EnableTHP()
	exe.close()
	fail(fmt.Errorf("execute %s: %w", binary, err))
}

// checkedBinary is the new binary opened and found to be the one that
// answered the hello; path is what to execute. For an ELF binary that is
// the open file itself (/proc/self/fd/N, closed by the execve), so no
// replacement of the path can come between the check and the execve. A
// script is executed by its path: its interpreter opens that path again.
type checkedBinary struct {
	f    *os.File
	path string
}

func openChecked(binary string, id binaryID) (checkedBinary, error) {
	f, err := os.Open(binary)
	if err != nil {
		return checkedBinary{}, fmt.Errorf("new binary: %w: %w", err, errdefs.ErrFailedPrecondition)
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		f.Close()
		return checkedBinary{}, fmt.Errorf("new binary %s: fstat: %w: %w", binary, err, errdefs.ErrFailedPrecondition)
	}
	if err := id.is(idOf(&st), binary); err != nil {
		f.Close()
		return checkedBinary{}, err
	}
	magic := make([]byte, 4)
	if n, _ := f.ReadAt(magic, 0); n == 4 && string(magic) == "\x7fELF" {
		return checkedBinary{f: f, path: fmt.Sprintf("/proc/self/fd/%d", f.Fd())}, nil
	}
	f.Close()
	return checkedBinary{path: binary}, nil
}

func (b checkedBinary) close() {
	if b.f != nil {
		b.f.Close()
	}
}

// describe hands over everything paused: it keeps the descriptors in fds
// and writes the state, in the newest layout that both this binary and the
// next (its hello) read and that can carry it, and returns its descriptor
// number.
func (d *Daemon) describe(fds *handover.FDs, pausedAt time.Time, binary string, hello handover.Hello) (int, error) {
	p := d.parts
	st := state{PausedAt: pausedAt, Binary: binary, Args: d.args}
	d.mu.Lock()
	st.Upgrades = d.record.count
	d.mu.Unlock()
	lst, err := p.Listener.Export(fds)
	if err != nil {
		return -1, err
	}
	st.Listener = *lst
	if st.Conns, err = p.Conns.ExportAll(fds); err != nil {
		return -1, err
	}
	if st.Events, err = p.Events.Export(); err != nil {
		return -1, err
	}
	svc, err := p.Service.Export(fds)
	if err != nil {
		return -1, err
	}
	st.Service = *svc
	if p.Pods != nil {
		pods, err := p.Pods.Export(fds)
		if err != nil {
			return -1, err
		}
		st.Pods = *pods
	}
	return writeState(&st, d.build, hello, fds)
}

// writeState writes st for the binary that said hello, in the newest layout
// both read that can carry it, and returns its descriptor number. A state
// that needs a newer layout than that binary reads (a downgrade while the
// daemon holds something only this build hands over) is FailedPrecondition,
// naming the thing.
func writeState(st *state, from handover.Build, hello handover.Hello, fds *handover.FDs) (int, error) {
	need, why := layoutNeeded(st)
	layout, err := hello.Newest(need, handover.StateVersion)
	if err != nil {
		if why != "" {
			return -1, fmt.Errorf("the state needs layout %d (%s): %w", need, why, err)
		}
		return -1, err
	}
	dropUnread(st, layout, fds)
	body, err := json.Marshal(st)
	if err != nil {
		return -1, err
	}
	return handover.WriteEnvelope(handover.Envelope{StateVersion: layout, From: from, Body: body}, fds)
}
