// Package reaper owns every child exit of the shim daemon.
//
// The daemon is a child subreaper: runtime commands (runc), container inits,
// exec'd processes and logging binaries all become its children, and exactly
// one goroutine calls wait4 for all of them. Nothing else in the shim may
// wait for a child (os/exec's Cmd.Wait would race with it and lose statuses).
//
// An exit is delivered to whoever claimed its PID. Because a process can die
// before the code that launched it has learned its PID (runc exec --detach
// returns after the process may already have exited), a launcher first opens
// a Window: every exit reaped while the window is open and not yet claimed is
// kept in it, so Claim finds it afterwards. Exits nobody claims and no window
// is open for (orphans re-parented to us) are counted and dropped. A window
// only ever returns exits reaped after it opened: with overlapping windows an
// unclaimed exit can stay kept for long, and its PID can meanwhile be given to
// a process launched later (pid_max is 32768 on many nodes), whose claim must
// not receive the old process's status.
package reaper

import (
	"context"
	"errors"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/example/containerd-shim-example-v2/internal/condwait"
)

// Exit is one reaped child.
type Exit struct {
	Pid    int
	Status int       // exit code, or 128+signal for a process killed by a signal
	Time   time.Time // when the shim reaped it
}

// Reaper dispatches child exits to their claimants.
//
// Locking: mu guards waiters, pending, open, reaped and callbacks; idle (on
// mu) is broadcast when callbacks drops to zero. Dispatch holds mu only to
// look up and send into a one-slot buffered channel (or start a goroutine,
// see Then), so it never blocks on a slow claimant.
type Reaper struct {
	mu      sync.Mutex
	waiters map[int]waiter
	// pending holds exits nobody claimed yet while any launch window is open
	// (one copy, however many windows overlap), each with its number in
	// reaped, oldest first per PID (a PID reused within overlapping windows
	// has more than one); open holds the windows open.
	pending map[int][]pendingExit
	open    map[*Window]struct{}
	reaped  uint64 // exits dispatched so far

	orphans atomic.Uint64 // exits nobody claimed (for introspection and tests)

	// tethered holds (under mu) the running children started with a
	// parent-death signal (Start), which the kernel ties to the forking
	// thread: while any runs, no thread may be ended. tetherMu is read-held
	// by each such fork, so that WhileUntethered excludes forks in progress.
	tethered map[int]struct{}
	tetherMu sync.RWMutex

	// An in-place upgrade pauses reaping (Pause): exits wait as zombies for
	// the next binary. sweepMu is held by each sweep, so that Pause returns
	// only once none runs; callbacks counts Then callbacks still running.
	sweepMu   sync.Mutex
	paused    atomic.Bool
	kick      chan struct{} // Resume: sweep what came while paused
	callbacks int
	idle      *sync.Cond
}

// New returns a reaper; call Run to start reaping.
func New() *Reaper {
	r := &Reaper{waiters: make(map[int]waiter), pending: make(map[int][]pendingExit), open: make(map[*Window]struct{}),
		tethered: make(map[int]struct{}), kick: make(chan struct{}, 1)}
	r.idle = sync.NewCond(&r.mu)
	return r
}

// pendingExit is an unclaimed exit kept for the launch windows, with the
// value of Reaper.reaped that counted it.
type pendingExit struct {
	Exit
	seq uint64
}

// waiter is a claimant of one exit: its channel, or (after Then) a function
// that runs in a goroutine of its own when the exit arrives.
type waiter struct {
	ch chan Exit
	fn func(Exit)
}

func (r *Reaper) deliver(w waiter, e Exit) {
	if w.fn != nil {
		r.runCallback(w.fn, e)
		return
	}
	w.ch <- e // one-slot buffer, never blocks
}

// runCallback runs fn in a goroutine of its own, counted for Pause. Called
// with mu held.
func (r *Reaper) runCallback(fn func(Exit), e Exit) {
	r.callbacks++
	go func() {
		defer func() {
			r.mu.Lock()
			if r.callbacks--; r.callbacks == 0 {
				r.idle.Broadcast()
			}
			r.mu.Unlock()
		}()
		fn(e)
	}()
}

// Run reaps children until ctx ends. It subscribes to SIGCHLD before its first
// sweep so no exit that happened before Run is missed.
//
// A reaper whose ctx has ended reaps nothing more, not even in a Run that
// starts late: wait4 takes any child of the process, and tests run several
// reapers one after another in one process, where a reaper of an earlier
// test (its goroutine scheduled only after the test ended) once took the exit
// of a later test's child, whose own reaper then never saw it.
func (r *Reaper) Run(ctx context.Context) {
	sigs := make(chan os.Signal, 32)
	signal.Notify(sigs, unix.SIGCHLD)
	defer signal.Stop(sigs)
	r.sweep(ctx)
	for {
		select {
		case <-ctx.Done():
			return
		case <-sigs:
		case <-r.kick:
		}
		r.sweep(ctx)
	}
}

// Pause stops reaping: children that exit from now on stay zombies, their
// status kept by the kernel, until Resume or a successor's reaper. It first
// lets the exit callbacks already running finish, reaping on meanwhile: a
// callback may itself start a child and wait for its exit (an init's exit
// runs the runtime's `kill --all` when the container shares a PID
// namespace), which a paused reaper would never deliver. It then pauses at a
// moment when no callback runs and no sweep is under way. If callbacks are
// still running after timeout, it returns false and reaping goes on.
func (r *Reaper) Pause(timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for {
		r.mu.Lock()
		idle := condwait.Until(r.idle, time.Until(deadline), func() bool { return r.callbacks == 0 })
		r.mu.Unlock()
		if !idle {
			return false
		}
		// Holding sweepMu keeps any sweep, and with it any new callback
		// from an exit, from starting while the count is checked.
		r.sweepMu.Lock()
		r.mu.Lock()
		settled := r.callbacks == 0
		if settled {
			r.paused.Store(true)
		}
		r.mu.Unlock()
		r.sweepMu.Unlock()
		if settled {
			return true
		}
	}
}

// Resume undoes Pause and reaps what exited meanwhile.
func (r *Reaper) Resume() {
	r.paused.Store(false)
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// sweep reaps every child that has exited. SIGCHLD signals coalesce, so one
// signal can stand for many exits: loop until wait4 says nothing is left.
func (r *Reaper) sweep(ctx context.Context) {
	r.sweepMu.Lock()
	defer r.sweepMu.Unlock()
	for !r.paused.Load() && ctx.Err() == nil {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil || pid <= 0 {
			return
		}
		r.dispatch(Exit{Pid: pid, Status: StatusOf(ws), Time: time.Now()})
	}
}

// StatusOf converts a wait status into the exit code containerd reports:
// the process's own code, or 128+N when signal N killed it.
func StatusOf(ws unix.WaitStatus) int {
	switch {
	case ws.Exited():
		return ws.ExitStatus()
	case ws.Signaled():
		return 128 + int(ws.Signal())
	default:
		return 255
	}
}

func (r *Reaper) dispatch(e Exit) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.reaped++
	if w, ok := r.waiters[e.Pid]; ok {
		delete(r.waiters, e.Pid)
		delete(r.tethered, e.Pid)
		r.deliver(w, e)
		return
	}
	if len(r.open) == 0 {
		r.orphans.Add(1)
		return
	}
	r.pending[e.Pid] = append(r.pending[e.Pid], pendingExit{Exit: e, seq: r.reaped})
}

// Orphans returns how many exits were reaped that nobody claimed.
func (r *Reaper) Orphans() uint64 { return r.orphans.Load() }

// Watched returns how many processes have a claimant waiting for their exit,
// and how many launch windows are open (for introspection).
func (r *Reaper) Watched() (pids, windows int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.waiters), len(r.open)
}

// Window keeps unclaimed exits while a process is being launched.
type Window struct {
	r      *Reaper
	since  uint64 // r.reaped when it opened: older exits are not its processes'
	closed bool   // guarded by r.mu
}

// Open starts collecting exits. Open it before starting a process whose PID
// is learned later, and Close it once every PID of interest is claimed.
func (r *Reaper) Open() *Window {
	r.mu.Lock()
	defer r.mu.Unlock()
	w := &Window{r: r, since: r.reaped}
	r.open[w] = struct{}{}
	return w
}

// Claim returns a channel that delivers pid's exit exactly once: at once if
// it was reaped while the window was open, otherwise when it happens. An
// exit of pid reaped before the window opened belonged to an earlier process
// (the PID was reused): it stays for the windows older than this one.
//
// Of several kept exits of pid (the PID reused while windows overlapped),
// the oldest this window may claim is taken. That is each window's own when
// windows claim in the order their processes started; two launches that
// both see their PID reused and claim out of order could swap statuses. For
// either to happen the PID allocator must come round to the same PID within
// one launch (tens of milliseconds): not seen in practice, and no claim is
// left unanswered by it.
func (w *Window) Claim(pid int) <-chan Exit { return w.claim(pid, false) }

// claim is Claim; with tethered, a pid whose exit is still to come is
// recorded as tethered until it is reaped.
func (w *Window) claim(pid int, tethered bool) <-chan Exit {
	ch := make(chan Exit, 1)
	w.r.mu.Lock()
	defer w.r.mu.Unlock()
	if kept := w.r.pending[pid]; len(kept) > 0 {
		for i, p := range kept {
			if p.seq <= w.since {
				continue
			}
			if kept = append(kept[:i:i], kept[i+1:]...); len(kept) == 0 {
				delete(w.r.pending, pid)
			} else {
				w.r.pending[pid] = kept
			}
			ch <- p.Exit
			return ch
		}
	}
	w.r.waiters[pid] = waiter{ch: ch}
	if tethered {
		w.r.tethered[pid] = struct{}{}
	}
	return ch
}

// WhileUntethered runs fn, and returns true, if no child started with a
// parent-death signal is running; no such child starts until fn returns.
// Otherwise it returns false without running fn. fn may then end threads:
// no running child is tied to one.
func (r *Reaper) WhileUntethered(fn func()) bool {
	r.tetherMu.Lock()
	defer r.tetherMu.Unlock()
	r.mu.Lock()
	n := len(r.tethered)
	r.mu.Unlock()
	if n > 0 {
		return false
	}
	fn()
	return true
}

// Adopt claims the exit of a child that is already running, or already a
// zombie not yet reaped: one a previous binary of this daemon started and
// handed over in an in-place upgrade. Call it before Run reaps anything; no
// launch window is needed, since the pid is known.
func (r *Reaper) Adopt(pid int) <-chan Exit {
	ch := make(chan Exit, 1)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.waiters[pid] = waiter{ch: ch}
	return ch
}

// Pidfd opens a pidfd on the process whose exit c (from Claim or Adopt for
// pid) is to deliver, unless that exit has come already (exited): its PID
// was freed then, and may name another process by now. No sweep runs
// between the check and the open, so the PID cannot be freed in between: a
// pidfd returned is the claimed process's, running or a zombie. fd is -1
// when the exit has come, or when pidfd_open failed (err).
func (r *Reaper) Pidfd(pid int, c <-chan Exit) (fd int, exited bool, err error) {
	r.sweepMu.Lock()
	defer r.sweepMu.Unlock()
	if len(c) > 0 {
		return -1, true, nil
	}
	fd, err = unix.PidfdOpen(pid, 0)
	if err != nil {
		return -1, false, err
	}
	return fd, false, nil
}

// Then has fn run, in a goroutine of its own, with the exit that c (which
// Claim returned for pid) delivers: at once if it is there, otherwise when it
// arrives. Nothing waits meanwhile, so a long-lived process costs no parked
// goroutine. c must not be received from elsewhere.
func (r *Reaper) Then(pid int, c <-chan Exit, fn func(Exit)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	select {
	case e := <-c:
		r.runCallback(fn, e)
		return
	default:
	}
	if w, ok := r.waiters[pid]; ok && w.ch == c {
		r.waiters[pid] = waiter{fn: fn}
		return
	}
	// Not claimed through this reaper: wait on the channel after all.
	go func() { fn(<-c) }()
}

// Close stops collecting. The exits still unclaimed that no open window can
// claim (reaped before the oldest of them opened) are orphans.
func (w *Window) Close() {
	r := w.r
	r.mu.Lock()
	defer r.mu.Unlock()
	if w.closed {
		return
	}
	w.closed = true
	delete(r.open, w)
	oldest := r.reaped
	for o := range r.open {
		oldest = min(oldest, o.since)
	}
	for pid, kept := range r.pending {
		left := kept[:0]
		for _, p := range kept {
			if p.seq <= oldest {
				r.orphans.Add(1)
			} else {
				left = append(left, p)
			}
		}
		if len(left) == 0 {
			delete(r.pending, pid)
		} else {
			r.pending[pid] = left
		}
	}
}
