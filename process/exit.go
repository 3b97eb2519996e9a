package process

import (
	"context"
	"log/slog"
	"time"

	"github.com/example/containerd-shim-example-v2/bundle"
	"github.com/example/containerd-shim-example-v2/internal/condwait"
	"github.com/example/containerd-shim-example-v2/reaper"
)

// A process's exit: recorded once (recordExit, from the reaper's callback),
// then given to every waiter, parked (Wait) or called back (OnExit).

// markExitedLocked releases Wait and OnExit once; the caller holds p.mu.
func (p *Process) markExitedLocked() {
	select {
	case <-p.exited:
	default:
		close(p.exited)
		p.waiters.Fire(&p.mu) // off this lock and goroutine: the callbacks answer over containerd's socket
	}
}

// oweAnswersLocked counts p, which is leaving its container (a Delete, or
// its container's), among the processes whose waiters are still to be
// answered, until the last of the callbacks registered so far has run (a
// barrier of p's waiters, once p's exit fires them). An upgrade waits
// for that (Handable, Forgettable): the next binary will not know p, and a
// Wait whose answer this binary wrote too late (held, see handover.Conn) is
// given to it again and answered NotFound. The usual leaving comes after the
// exit, with answers fired and perhaps still being written: the paid
// barrier waits for them (waitlist.List), so it counts those too.
// Nothing is owed once every callback has run. The caller holds p.mu.
func (p *Process) oweAnswersLocked() {
	c := p.c
	paid := func() {
		c.mu.Lock()
		c.answersOwed--
		c.mu.Unlock()
	}
	if _, ok := p.waiters.AddBarrier(&p.mu, paid); ok {
		c.mu.Lock()
		c.answersOwed++
		c.mu.Unlock()
	}
}

// OnExit calls fn once, on a goroutine of its own, with the process's final
// state when it has exited or was deleted (at once if it already has): what
// Wait returns, without a goroutine parked until then. withdraw removes fn
// if it has not been started and reports whether it did; a false means fn
// runs or has run.
//
// A process that has left its container owes fn's answer too (see
// oweAnswersLocked): a Wait whose lookup found it before it left registers
// only once the Delete lets go of mu, behind the answers counted then, or
// after they fired.
func (p *Process) OnExit(fn func(Snapshot)) (withdraw func() bool) {
	call := func() { fn(p.State()) }
	c := p.c
	p.mu.Lock()
	withdraw, ok := p.waiters.Add(&p.mu, call)
	left := p.status == Deleted
	switch {
	case left && ok:
		p.oweAnswersLocked() // paid after call
	case left:
		c.mu.Lock()
		c.answersOwed++
		c.mu.Unlock()
	}
	p.mu.Unlock()
	if !ok {
		go func() {
			call()
			if left {
				c.mu.Lock()
				c.answersOwed--
				c.mu.Unlock()
			}
		}()
		return func() bool { return false }
	}
	return withdraw
}

// recordExit moves the process to stopped and reports the exit.
func (p *Process) recordExit(e reaper.Exit) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closePidfdLocked()
	if p.IsInit() {
		// Durable before it is published: if the daemon dies from here on,
		// `delete` still reports this exit rather than a guess.
		if err := bundle.WriteExit(p.c.Bundle, bundle.Exit{Pid: p.pid, Status: e.Status, ExitedAt: e.Time}); err != nil {
			slog.Warn("record init exit", "container", p.c.ID, "error", err)
		}
	}
	if p.pipes != nil {
		p.pipes.Hangup()
	}
	p.setLocked(func() {
		p.exitCode, p.exitedAt = e.Status, e.Time
		if p.status != Deleted {
			p.status = Stopped
		}
	})
	p.markExitedLocked()
	// Not for a process deleted before its exit: a created process
	// (deleting), or an exec left running when its container was deleted
	// (releaseExecs); its task is gone.
	if !p.deleting && p.status != Deleted && p.c.events.Exited != nil {
		p.c.events.Exited(p, p.snapshotLocked())
	}
}

// Wait blocks until the process has exited (or was deleted) and returns its
// final state.
func (p *Process) Wait(ctx context.Context) (Snapshot, error) {
	select {
	case <-p.exited:
		return p.State(), nil
	case <-ctx.Done():
		return Snapshot{}, ctx.Err()
	}
}

// initExited reports the init's exit (the reaper runs it when the exit
// arrives) after every exec exit of the container has been reported.
func (c *Container) initExited(e reaper.Exit) {
	c.mu.Lock()
	c.initReaped = true
	c.mu.Unlock()
	// Read the OOM count at once: a systemd scope (the systemd cgroup
	// driver) is removed as soon as it is empty, and the kill below and
	// the wait for the execs give it time to go, the count with it.
	c.reportOOMBeforeExit()
	c.reportOOMOfRemovedCgroup(e.Status)

	switch {
	case c.ownPIDNS: // the kernel kills the rest with the namespace's init
	case c.hasNoCgroup():
		// The runtime's kill --all finds a container's processes in its
		// cgroup, and there is none: it would find nothing.
		c.keepExitedSession(c.init.session)
		c.killLeftovers()
		c.releaseMountNS()
	default:
		// Without a PID namespace of its own, the container's other processes
		// do not die with its init: kill them so none is leaked.
		ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
		_ = c.rt.Kill(ctx, c.ID, 9, true)
		cancel()
	}
	c.waitIdle(execsBeforeInitTimeout)
	c.reportOOMBeforeExit()
	c.mu.Lock()
	c.exitRecorded = true // from here on an OOM would follow the exit: none is reported
	c.mu.Unlock()
	c.init.recordExit(e)
}

// waitIdle waits until no exec runs and no checkpoint that stops the
// container is under way, so that the init's exit follows their reports.
func (c *Container) waitIdle(timeout time.Duration) {
	c.mu.Lock()
	condwait.Until(c.execsIdle, timeout, func() bool { return c.runningExecs == 0 && c.stoppingCheckpoints == 0 })
	c.mu.Unlock()
}
