package process

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"slices"
	"time"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"

	"github.com/example/containerd-shim-example-v2/internal/proctree"
)

// A container the runtime made no cgroup for (rootless containerd without a
// delegated cgroup) stays in the shim's own cgroup: what the runtime does
// through a container's cgroup (listing, freezing, limits, killing them all)
// the shim does from /proc, or refuses.

// hasNoCgroup reports a container the runtime made no cgroup for (it stays
// in the shim's own: containerCgroup). Takes c.mu.
func (c *Container) hasNoCgroup() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.inShimCgroup
}

// needsCgroup turns a runtime's failure at something only a cgroup allows
// (freezing, limits) into FailedPrecondition for a container without a cgroup
// of its own, saying so; the runtime's own words ("cgroups not configured
// for container", "container could not join or create cgroup") would reach
// the caller as Unknown. Other failures, and nil, pass unchanged.
func (c *Container) needsCgroup(err error, what string) error {
	if err == nil || !c.hasNoCgroup() {
		return err
	}
	return fmt.Errorf("%s (the runtime made none: rootless without a delegated cgroup): %v: %w", what, err, errdefs.ErrFailedPrecondition)
}

// pidsFromProc lists the processes of a container without a cgroup of its
// own from /proc: its pid namespace's, or, when it shares another's, the
// init's and its running execs' descendants and sessions, and what its
// exited execs left in theirs (proctree.Of).
func (c *Container) pidsFromProc(init int) ([]int, error) {
	procs, err := c.procsFromProc(init)
	if err != nil {
		return nil, fmt.Errorf("list processes of %s: %w", c.ID, err)
	}
	pids := make([]int, len(procs))
	for i, p := range procs {
		pids[i] = p.Pid
	}
	return pids, nil
}

// procsFromProc is what pidsFromProc lists, with start times.
func (c *Container) procsFromProc(init int) ([]proctree.Proc, error) {
	return proctree.Of(init, c.known())
}

// known is what the container's processes are found by beside its init
// (proctree.Known): its running execs, the sessions its exited ones left
// (keepExitedSession), and its mount namespace (holdMountNS).
func (c *Container) known() proctree.Known {
	execs := c.runningExecPids()
	c.mu.Lock()
	defer c.mu.Unlock()
	return proctree.Known{Execs: execs, Exited: slices.Clone(c.exitedSessions), Mounts: c.mountNS}
}

// signalAll sends sig to every process of a container without a cgroup of
// its own (as pidsFromProc lists them): a kill with all, which the runtime
// does through the cgroup. Without one runc 1.1 fails ("lstat : no such
// file or directory") and later runcs signal the init alone. A process gone
// meanwhile is skipped; the init gone is NotFound, as from the runtime.
func (c *Container) signalAll(init, sig int) error {
	procs, err := c.procsFromProc(init)
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("process already finished: %w", errdefs.ErrNotFound)
	}
	if err != nil {
		return fmt.Errorf("kill all of %s: %w", c.ID, err)
	}
	var failed error
	for _, p := range procs {
		if err := p.Signal(unix.Signal(sig)); err != nil && !errors.Is(err, proctree.ErrGone) && failed == nil {
			failed = fmt.Errorf("kill all of %s: signal %d to %d: %w", c.ID, sig, p.Pid, err)
		}
	}
	return failed
}

// runningExecPids lists the PIDs of the container's execs that run. One that
// has exited is left out: its PID may be another process's by now.
func (c *Container) runningExecPids() []int {
	var pids []int
	for _, e := range c.Execs() {
		if st := e.State(); st.Pid > 0 && (st.Status == Running || st.Status == Paused) {
			pids = append(pids, st.Pid)
		}
	}
	return pids
}

// tracksSessions reports a container whose processes are found by their
// sessions (proctree): without a cgroup of its own, in a pid namespace it
// shares.
func (c *Container) tracksSessions() bool {
	return !c.ownPIDNS && c.hasNoCgroup()
}

// noteSession is the session of a process of the container that has just
// started (pid), where tracksSessions, for keepExitedSession at its exit:
// once it is reaped its session can no longer be read. 0 elsewhere, and
// when proctree.SessionOf finds none of the container's (a process gone
// already is taken for the leader of its own, as runc starts each).
func (c *Container) noteSession(pid int) int {
	if !c.tracksSessions() {
		return 0
	}
	return proctree.SessionOf(pid)
}

// keepExitedSession records what an init or exec that has exited left in
// its session (noteSession; 0 for none): its orphans (reparented to the
// shim, or to a pod's init) are found from no other root, and would be
// listed by no Pids and killed by nobody. Records no member of which is in
// its session any more are dropped (their numbers may be reused). Called
// before the exit is recorded, so that at no moment the process is neither
// running (a root) nor recorded; it costs one scan of /proc per exit, in
// this mode only.
func (c *Container) keepExitedSession(session int) {
	if session == 0 {
		return
	}
	e, err := proctree.ExitedSession(session)
	if err != nil {
		slog.Warn("find what an exited process left in its session", "container", c.ID, "session", session, "error", err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	// A stat read per recorded member, under mu: the records are few.
	c.exitedSessions = slices.DeleteFunc(c.exitedSessions, proctree.Exited.Gone)
	if len(e.Members) > 0 {
		c.exitedSessions = append(c.exitedSessions, e)
	}
}

// holdMountNS holds the mount namespace of the init (pid), which has just
// started, where tracksSessions: the processes in it are the container's,
// the ones no session finds included (a daemon that started its own). Kept
// until the init's exit has been dealt with (releaseMountNS); not handed
// over in an upgrade, where the successor holds it again from a running
// init. Without it (the init gone, the namespace the shim's own or joined by
// path) the sessions alone find them.
func (c *Container) holdMountNS(pid int) {
	if !c.tracksSessions() || !c.ownMountNS {
		return // a namespace it shares with another container would take in that one's
	}
	m, err := proctree.OpenMountNS(pid)
	if err != nil {
		slog.Warn("hold the mount namespace of a container without a cgroup", "container", c.ID, "pid", pid, "error", err)
	}
	c.mu.Lock()
	c.mountNS.Close() // none held before; were one, it is not leaked
	c.mountNS = m
	c.mu.Unlock()
}

// releaseMountNS lets the namespace holdMountNS held go: once the init has
// exited and what it left is killed, no one lists the container's processes.
func (c *Container) releaseMountNS() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.mountNS.Close()
	c.mountNS = nil
}

// leftoverRounds bounds killLeftovers' scans: a process may fork while the
// ones found are killed, and the next scan finds its children.
const leftoverRounds = 5

// killLeftovers kills what a container without a cgroup of its own, in a
// pid namespace it shares, left running when its init exited (and its
// session was recorded: keepExitedSession): the runtime's `kill --all`
// finds a container's processes in its cgroup, and there is none, so they
// would outlive the container (as under the stock shim). Found by
// proctree.Leftovers: what the init and the exited execs left in their
// sessions, the running execs with theirs, and what is in its mount
// namespace.
func (c *Container) killLeftovers() {
	for range leftoverRounds {
		procs, err := proctree.Leftovers(c.known())
		if err != nil {
			slog.Warn("find the processes left by the init's exit", "container", c.ID, "error", err)
			return
		}
		if len(procs) == 0 {
			return
		}
		slog.Debug("killing the processes left by the init's exit", "container", c.ID, "processes", procs)
		for _, p := range procs {
			_ = p.Signal(unix.SIGKILL) // fails only for one gone meanwhile
		}
		time.Sleep(10 * time.Millisecond)
	}
}
