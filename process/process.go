package process

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"

	"github.com/example/containerd-shim-example-v2/bundle"
	"github.com/example/containerd-shim-example-v2/internal/waitlist"
	shimio "github.com/example/containerd-shim-example-v2/io"
	"github.com/example/containerd-shim-example-v2/oci"
	"github.com/example/containerd-shim-example-v2/reaper"
)

// Process is a container's init or one of its execs.
//
// Locking: mu guards every field below it. It is held across a launch
// (runtime start/exec) and across the callbacks that report transitions, so a
// process's exit, which also takes mu, is reported after its start.
//
// status, pid, exitCode and exitedAt are also guarded by viewMu, which is
// held only while they are copied or changed: a change takes mu and then
// viewMu (setLocked), so code holding mu reads them directly, and State, Pid
// and Status read them under viewMu alone. A Start holds mu for as long as
// the runtime takes, poststart hooks included; Connect, Pids and State must
// not wait for it.
type Process struct {
	c     *Container
	ID    string // exec id; "" for the init
	Stdio shimio.Config

	execSpec []byte // OCI Process JSON (execs)

	mu     sync.Mutex
	viewMu sync.Mutex
	status Status
	pid    int
	pidfd  int // execs: signals go through it, immune to PID reuse; -1 when none
	// launchExit: an exec whose exit came during its launch, before a pidfd
	// could be had (reaper.Pidfd). Its PID may be another process's by then,
	// so it gets no signal (ESRCH) until the exit is recorded.
	launchExit bool
	// session is the session the process was in at its start, noted for a
	// container whose processes are found by session (noteSession), else
	// 0; set with pid, before its exit is claimed, and read at the exit.
	session  int
	exitCode int
	exitedAt time.Time
	pipes    *shimio.Pipes
	deleting bool // Delete is tearing down a never-started process: report no exit
	// deleteBusy is closed when the Delete under way returns (nil: none).
	deleteBusy chan struct{}
	restore    *oci.RestoreOpts // init created from a checkpoint: Start restores it
	exited     chan struct{}    // closed once the exit is recorded, or at delete
	// waiters are the OnExit callbacks; fired when exited is closed.
	waiters waitlist.List
}

func newProcess(c *Container, id string, stdio shimio.Config, pipes *shimio.Pipes) *Process {
	return &Process{c: c, ID: id, Stdio: stdio, status: Created, pidfd: -1, pipes: pipes, exited: make(chan struct{})}
}

// Container returns the container the process belongs to.
func (p *Process) Container() *Container { return p.c }

// IsInit reports whether p is its container's init.
func (p *Process) IsInit() bool { return p.ID == "" }

// Snapshot is a consistent copy of a process's state.
type Snapshot struct {
	Status   Status
	Pid      int
	ExitCode int
	ExitedAt time.Time
}

// snapshotLocked copies the state; the caller holds p.mu or p.viewMu.
func (p *Process) snapshotLocked() Snapshot {
	return Snapshot{Status: p.status, Pid: p.pid, ExitCode: p.exitCode, ExitedAt: p.exitedAt}
}

// setLocked makes a change to the fields State reads; the caller holds p.mu.
func (p *Process) setLocked(change func()) {
	p.viewMu.Lock()
	change()
	p.viewMu.Unlock()
}

// State returns a consistent snapshot, without waiting for a Start or any
// other request in progress. Execs of a paused container report paused.
func (p *Process) State() Snapshot {
	p.viewMu.Lock()
	s := p.snapshotLocked()
	p.viewMu.Unlock()
	if !p.IsInit() && s.Status == Running && p.c.init.Status() == Paused {
		s.Status = Paused
	}
	return s
}

// OutputCounters describes a process's output relays for introspection.
type OutputCounters struct {
	Delivered, Dropped uint64 // bytes moved to the client or log; bytes discarded while it stalled
	Queued             uint64 // bytes in the process's pipes, not yet moved
	ClientQueued       uint64 // bytes in the client's FIFOs, not yet read
	Terminal           bool
}

// Output returns the process's output counters. It waits, as State does,
// while the process is being started.
func (p *Process) Output() OutputCounters {
	p.mu.Lock()
	pipes := p.pipes
	p.mu.Unlock()
	if pipes == nil {
		return OutputCounters{}
	}
	own, client := pipes.Queued()
	return OutputCounters{Delivered: pipes.Moved(), Dropped: pipes.Dropped(), Queued: own, ClientQueued: client, Terminal: pipes.Terminal()}
}

// Status returns the process's status, without waiting for a request in
// progress.
func (p *Process) Status() Status {
	p.viewMu.Lock()
	defer p.viewMu.Unlock()
	return p.status
}

// Pid returns the host PID (0 for an exec not yet started), without waiting
// for a request in progress.
func (p *Process) Pid() int {
	p.viewMu.Lock()
	defer p.viewMu.Unlock()
	return p.pid
}

func (p *Process) checkOp(op Op) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.checkLocked(op)
}

// checkLocked is check for the process as it is, and refuses every op while
// it is being deleted: a created process's Delete lets go of the lock while
// the runtime deletes it, and a Start then would run a process with nothing
// to report its exit. The caller holds p.mu.
func (p *Process) checkLocked(op Op) error {
	if p.deleting {
		return fmt.Errorf("%s is being deleted: %w", p.name(), errdefs.ErrFailedPrecondition)
	}
	if op == OpExec && p.restore != nil {
		// Created from a checkpoint, restored at Start: nothing runs in it
		// yet, and the runtime has no such container to exec into.
		return fmt.Errorf("%s is to be restored from a checkpoint at its start: cannot exec in it before: %w", p.name(), errdefs.ErrFailedPrecondition)
	}
	return check(p.status, op)
}

// name says which process this is, for errors.
func (p *Process) name() string {
	if p.IsInit() {
		return "container " + p.c.ID
	}
	return "exec " + strconv.Quote(p.ID) + " of " + p.c.ID
}

// transition runs action for op and moves to next, reporting with notify
// under the lock.
func (p *Process) transition(op Op, next Status, action func() error, notify func()) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.checkLocked(op); err != nil {
		return err
	}
	if err := action(); err != nil {
		return err
	}
	p.setLocked(func() { p.status = next })
	if notify != nil {
		notify()
	}
	return nil
}

// Start starts a created init or exec. onStarted runs with the PID before any
// exit of the process can be reported.
func (p *Process) Start(ctx context.Context, onStarted func(pid int)) error {
	p.mu.Lock()
	restoring := p.restore != nil
	p.mu.Unlock()
	if p.IsInit() && restoring {
		return p.startRestore(ctx, onStarted)
	}
	if p.IsInit() {
		// The runtime is not killed at the request's deadline: killed once
		// it has opened the exec FIFO, it has let the init exec the process
		// but leaves the FIFO, so the process runs while the runtime (and
		// the task) still take the container for created, and a second
		// Start waits on that FIFO forever. It runs on for a grace period;
		// a container it started after the request ended is running, and
		// is recorded so.
		runCtx, endRun := afterGrace(ctx, launchGrace)
		defer endRun()
		return p.transition(OpStart, Running, func() error {
			if err := p.c.rt.Start(runCtx, p.c.ID); err != nil {
				return p.c.initStartError(p.pid, err)
			}
			return nil
		}, func() { onStarted(p.pid) })
	}
	return p.startExec(ctx, onStarted)
}

// startRestore brings a container created from a checkpoint to life.
func (p *Process) startRestore(ctx context.Context, onStarted func(pid int)) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.checkLocked(OpStart); err != nil {
		return err
	}
	c := p.c
	// Still Created, so still to be restored: restore is cleared only
	// together with the move to Running, under p.mu.
	opts := *p.restore
	begun := time.Now()
	pid, exitc, err := c.launch(p.pipes, opts.PidFile, func(stdio oci.Stdio, consoleSocket string) error {
		opts.Stdio, opts.ConsoleSocket = stdio, consoleSocket
		return c.rt.Restore(ctx, c.ID, c.Bundle, opts)
	})
	if err != nil {
		// The task stays Created with these pipes, and Start may restore
		// again: the runtime's error, held in them, must not come out with
		// the output of an attempt that succeeds; and a runtime record left
		// by a restore that failed after the runtime's part (launch killed
		// its process) would make the next attempt fail as existing.
		p.pipes.DiscardHeld()
		c.destroyRuntimeState()
		return fmt.Errorf("restore %s from %s: %w%s", c.ID, opts.ImagePath, err, restoreLogNote(opts.CheckpointOpts, begun))
	}
	if opts.WorkPath == filepath.Join(c.Bundle, criuWorkDir) {
		os.RemoveAll(opts.WorkPath) // the shim's own; a failed attempt's is kept, its log named in the error
	}
	c.watchCgroup(pid)
	p.restore = nil
	p.session = c.noteSession(pid)
	c.holdMountNS(pid)
	p.setLocked(func() { p.pid, p.status = pid, Running })
	onStarted(pid)
	c.rt.Reaper.Then(pid, exitc, c.initExited)
	return nil
}

func (p *Process) startExec(ctx context.Context, onStarted func(pid int)) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.checkLocked(OpStart); err != nil {
		return err
	}
	c := p.c
	started := false
	defer func() {
		if !started {
			p.notStartedLocked()
		}
	}()
	c.mu.Lock()
	if c.initReaped {
		c.mu.Unlock()
		// Starting it would leak it where the container has no PID namespace.
		return fmt.Errorf("container %s has exited: cannot start exec %q: %w", c.ID, p.ID, errdefs.ErrFailedPrecondition)
	}
	c.runningExecs++
	c.mu.Unlock()
	defer func() {
		if !started {
			c.execDone()
		}
	}()

	pipes, err := shimio.Open(p.Stdio, c.ioEnv(p.ID))
	if err != nil {
		return fmt.Errorf("exec %q stdio: %w", p.ID, err)
	}
	specFile := filepath.Join(c.Bundle, "."+p.ID+".process.json")
	if err := oci.WriteProcessFile(specFile, p.execSpec); err != nil {
		pipes.Close()
		return fmt.Errorf("write exec %q process spec: %w", p.ID, err)
	}
	defer os.Remove(specFile)

	pidFile := filepath.Join(c.Bundle, bundle.ExecPidFile(p.ID))
	// Only the runtime's part is kept apart from a Pause (launchGate).
	c.mu.Lock()
	err = c.beginExecLaunchLocked(p.ID)
	c.mu.Unlock()
	if err != nil {
		pipes.Close()
		return err
	}
	// The runtime is not killed at the request's deadline: killed between
	// starting the process and writing its PID file, it leaves the process
	// running with no PID to track or kill it by (and runc its temporary
	// PID file in the bundle). It runs on for a grace period; a process it
	// starts after the request ended is killed by launch: the client gave
	// up on it.
	runCtx, endRun := afterGrace(ctx, launchGrace)
	defer endRun()
	pid, exitc, err := c.launch(pipes, pidFile, func(stdio oci.Stdio, consoleSocket string) error {
		err := c.rt.Exec(runCtx, c.ID, oci.ExecOpts{
			ProcessFile:   specFile,
			PidFile:       pidFile,
			ConsoleSocket: consoleSocket,
			Stdio:         stdio,
		})
		if err == nil && ctx.Err() != nil {
			return fmt.Errorf("the runtime started exec %q after its request ended: %w", p.ID, context.Cause(ctx))
		}
		return err
	})
	c.endExecLaunch()
	if err != nil {
		pipes.Close()
		return c.execLaunchError(p.ID, err)
	}
	// A pidfd pins the process: signals sent through it can never reach a
	// process that reused the PID after this one was reaped. None is opened
	// for an exec whose exit came already (a `true` may be gone before the
	// runtime returns): its PID was free from then on.
	p.pidfd, p.launchExit, _ = c.rt.Reaper.Pidfd(pid, exitc)
	p.pipes = pipes
	p.session = c.noteSession(pid)
	p.setLocked(func() { p.pid, p.status = pid, Running })
	started = true
	onStarted(pid)
	c.rt.Reaper.Then(pid, exitc, p.execExited)
	c.mu.Lock()
	lateForInit := c.initReaped
	c.mu.Unlock()
	// Without a pidfd (a kernel without them) the PID is signalled only
	// while it is still an unreaped child; one that exited during the
	// launch gets no signal (launchExit).
	if lateForInit && (p.pidfd >= 0 || unreapedChild(pid)) {
		// The init died while the runtime launched this exec, maybe after
		// the init's exit killed the container's processes (`kill --all`,
		// without a PID namespace of its own): this one joined too late
		// for it, and would outlive the container. The init's exit waits
		// for it (runningExecs) and is reported after its exit.
		if err := p.sendSignalLocked(unix.SIGKILL); err != nil && !errors.Is(err, unix.ESRCH) {
			slog.Warn("kill exec started as its container exited", "container", c.ID, "exec", p.ID, "error", err)
		}
	}
	return nil
}

// launchGrace is how long a runtime's create, start or exec runs on after
// its request has ended (see Create, Start and startExec): a runtime killed
// part way leaves what no later command finds or undoes.
const launchGrace = 10 * time.Second

// afterGrace returns a context with ctx's values that ends grace after ctx
// does, or when end is called.
func afterGrace(ctx context.Context, grace time.Duration) (_ context.Context, end func()) {
	run, cancel := context.WithCancel(context.WithoutCancel(ctx))
	stop := context.AfterFunc(ctx, func() {
		timer := time.AfterFunc(grace, cancel)
		context.AfterFunc(run, func() { timer.Stop() })
	})
	return run, func() {
		stop()
		cancel()
	}
}

// NotStartedExitCode is what Wait, State and Delete report for an exec
// whose Start failed: it never ran, and 0 would read as its success.
const NotStartedExitCode = 255

// notStartedLocked ends an exec whose Start failed: stopped, its waiters
// answered. It stays until its Delete, as an exec that ran does. Left
// created, every Wait on it (containerd's client sends one before Start)
// waited until the Delete; the stock shim answers those Waits too, with 0.
// No exit is published: it never started. The caller holds p.mu.
func (p *Process) notStartedLocked() {
	p.setLocked(func() {
		p.status, p.exitCode, p.exitedAt = Stopped, NotStartedExitCode, time.Now()
	})
	p.markExitedLocked()
}

// unreapedChild reports whether pid is a child of the shim not reaped yet
// (running, or a zombie), without reaping it.
func unreapedChild(pid int) bool {
	for {
		var info unix.Siginfo
		err := unix.Waitid(unix.P_PID, pid, &info, unix.WEXITED|unix.WNOHANG|unix.WNOWAIT, nil)
		if err != unix.EINTR {
			return err == nil
		}
	}
}

func (c *Container) execDone() {
	c.mu.Lock()
	c.runningExecs--
	if c.runningExecs == 0 {
		c.execsIdle.Broadcast()
	}
	c.mu.Unlock()
}

func (p *Process) execExited(e reaper.Exit) {
	p.c.keepExitedSession(p.session)
	p.recordExit(e)
	p.c.execDone()
}

// closePidfdLocked closes the process's pidfd, if any; the caller holds p.mu.
func (p *Process) closePidfdLocked() {
	if p.pidfd >= 0 {
		unix.Close(p.pidfd)
		p.pidfd = -1
	}
}

// Kill signals the process; for the init with all, every process of the
// container. A process that has finished answers NotFound.
func (p *Process) Kill(ctx context.Context, sig int, all bool) error {
	if !p.IsInit() {
		return p.signalExec(sig)
	}
	// Not under mu: a Start holds it while the runtime runs, and a kill is
	// how a client ends a start that hangs (a poststart hook, say).
	st := p.State()
	status, pid := st.Status, st.Pid
	if status == Stopped || status == Deleted {
		return fmt.Errorf("process already finished: %w", errdefs.ErrNotFound)
	}
	if all && p.c.hasNoCgroup() {
		return p.c.signalAll(pid, sig) // the runtime would look in the cgroup
	}
	if err := p.c.rt.Kill(ctx, p.c.ID, sig, all); err != nil {
		// The runtime refuses a container whose init is gone; that race is
		// the same answer as an already-stopped process, whether the reaper
		// has got to the exit yet or the init is still a zombie (a kubelet
		// stop meeting the exit it asked for). So is a container the
		// runtime has no state for (a checkpoint not restored yet, state
		// removed behind the shim's back): containerd's kill-then-delete
		// (WithProcessKill) and CRI's stop take NotFound as "nothing left".
		if p.c.initGone(pid) || !p.c.runtimeStateExists(ctx) {
			return fmt.Errorf("process already finished: %w", errdefs.ErrNotFound)
		}
		if all && status == Running {
			p.c.thawAfterKillAllFailed(ctx) // runc cut short between its freeze and thaw
		}
		return fmt.Errorf("kill %s: %w", p.c.ID, err)
	}
	if all && status == Paused && sig != int(unix.SIGKILL) {
		p.c.followFreezerAfterKillAll(ctx)
	}
	return nil
}

// Resize sets the size of the process's terminal; without one it is a no-op.
func (p *Process) Resize(width, height uint32) error {
	p.mu.Lock()
	pipes, status := p.pipes, p.status
	p.mu.Unlock()
	if status == Deleted {
		return fmt.Errorf("process already deleted: %w", errdefs.ErrNotFound)
	}
	if pipes == nil {
		return nil
	}
	if err := pipes.Resize(width, height); err != nil {
		return fmt.Errorf("resize terminal: %w", err)
	}
	return nil
}

// CloseStdin ends the process's input (CloseIO). Idempotent.
func (p *Process) CloseStdin() {
	p.mu.Lock()
	pipes := p.pipes
	p.mu.Unlock()
	if pipes != nil {
		pipes.CloseStdin()
	}
}

// signalExec signals a running exec. Under p.mu: the exit's record closes
// the pidfd under it too, so the descriptor sent on is the exec's own and not
// a number the daemon has since reused. Without a pidfd (pidfd_open refused:
// a kernel before 5.3, a seccomp profile) the pid is signalled, as the stock
// shim always does; the exit is not recorded yet, so the pid is still the
// exec's or its zombie's.
func (p *Process) signalExec(sig int) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch p.status {
	case Stopped, Deleted:
		return fmt.Errorf("process already finished: %w", errdefs.ErrNotFound)
	case Created:
		return fmt.Errorf("exec %q not started: %w", p.ID, errdefs.ErrFailedPrecondition)
	}
	err := p.sendSignalLocked(unix.Signal(sig))
	switch {
	case errors.Is(err, unix.ESRCH):
		return fmt.Errorf("process already finished: %w", errdefs.ErrNotFound)
	case err != nil:
		return fmt.Errorf("signal exec %q: %w", p.ID, err)
	}
	return nil
}

// sendSignalLocked signals the running process through its pidfd, or its
// pid without one; the caller holds p.mu. An exec whose exit came during
// its launch has exited: ESRCH.
func (p *Process) sendSignalLocked(sig unix.Signal) error {
	switch {
	case p.pidfd >= 0:
		return unix.PidfdSendSignal(p.pidfd, sig, nil, 0)
	case p.launchExit:
		return unix.ESRCH
	}
	return unix.Kill(p.pid, sig)
}

// Delete tears the process down once it is no longer running: it waits
// (bounded) for its output to reach the client, releases its stdio and, for
// the init, the runtime state and the rootfs. onDeleted runs last, under the
// lock, with the final state.
//
// One Delete at a time: a second one waits for the first and then answers
// as the state it left says (NotFound once deleted), as the stock shim's
// does, which holds the process's lock throughout. Both used to tear the
// process down, and the later one's runtime delete and unmount could reach
// a new task created meanwhile under the same id (and bundle: Docker's
// restart).
func (p *Process) Delete(ctx context.Context, onDeleted func(Snapshot)) error {
	p.mu.Lock()
	for p.deleteBusy != nil {
		busy := p.deleteBusy
		p.mu.Unlock()
		select {
		case <-busy:
		case <-ctx.Done():
			return fmt.Errorf("wait for the delete under way: %w", ctx.Err())
		}
		p.mu.Lock()
	}
	busy := make(chan struct{})
	p.deleteBusy = busy
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		p.deleteBusy = nil
		p.mu.Unlock()
		close(busy)
	}()
	return p.deleteOnce(ctx, onDeleted)
}

// deleteOnce is Delete, with no other Delete of p under way.
func (p *Process) deleteOnce(ctx context.Context, onDeleted func(Snapshot)) error {
	p.mu.Lock()
	if err := check(p.status, OpDelete); err != nil {
		p.mu.Unlock()
		return err
	}
	neverStarted := p.status == Created
	if neverStarted {
		p.deleting = true
	}
	p.mu.Unlock()

	if p.IsInit() {
		if err := p.c.destroy(ctx, neverStarted); err != nil {
			p.mu.Lock()
			p.deleting = false
			p.mu.Unlock()
			return err
		}
		// Off the init's lock: an exec's lock is never taken under it.
		p.c.releaseExecs()
	}

	p.mu.Lock()
	defer p.mu.Unlock()
	if p.status == Deleted {
		return fmt.Errorf("process already deleted: %w", errdefs.ErrNotFound)
	}
	if p.pipes != nil {
		if !p.pipes.Drain(IODrainTimeout) {
			// Not silent: output was cut short.
			slog.Warn("output not drained in time; closing", "container", p.c.ID, "exec", p.ID, "timeout", IODrainTimeout)
		}
		p.pipes.Close()
	}
	p.closePidfdLocked()
	p.setLocked(func() { p.status = Deleted })
	p.oweAnswersLocked()
	p.markExitedLocked() // releases waiters of a process that never ran
	if !p.IsInit() {
		_ = os.Remove(filepath.Join(p.c.Bundle, bundle.ExecPidFile(p.ID)))
		p.c.removeExec(p.ID)
	}
	onDeleted(p.snapshotLocked())
	return nil
}

// destroy removes the container from the runtime and unmounts its rootfs.
func (c *Container) destroy(ctx context.Context, neverStarted bool) error {
	if err := c.rt.Delete(ctx, c.ID, neverStarted); err != nil {
		// Whatever the runtime says, the outcome that matters is that its
		// state is gone; a forced delete settles a half-removed container.
		// Both it and the check get a context of their own: the request's
		// deadline may be what ended the first delete, and a state command
		// killed by it would read as a container that is gone.
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
		ferr := c.rt.Delete(fctx, c.ID, true)
		cancel()
		if ferr != nil && c.runtimeStateExists(ctx) {
			return fmt.Errorf("delete container %s: %w", c.ID, err)
		}
	}
	if neverStarted && c.init.Pid() != 0 {
		// The runtime killed the blocked init; wait for its reaping so no
		// exit arrives after the delete is reported.
		select {
		case <-c.init.exited:
		case <-time.After(deleteCreatedTimeout):
		}
	}
	if c.stopOOM != nil {
		c.stopOOM()
	}
	c.mu.Lock()
	c.oom.stopped = true // ends a v1 recheck still pending (recheckOOM)
	c.mu.Unlock()
	if c.rootfsMount {
		if err := unmountAll(filepath.Join(c.Bundle, bundle.RootfsDir)); err != nil {
			return fmt.Errorf("delete container %s: %w", c.ID, err)
		}
	}
	return nil
}

// runtimeStateExists asks the runtime whether it still has the container,
// on a bounded context of its own. No answer in time counts as yes: only a
// runtime that answered may have it taken for gone.
func (c *Container) runtimeStateExists(parent context.Context) bool {
	_, timedOut, err := c.runtimeState(parent)
	return err == nil || timedOut
}
