package sandbox

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/containerd/errdefs"

	"github.com/example/containerd-shim-example-v2/cgroup"
	"github.com/example/containerd-shim-example-v2/holder"
	"github.com/example/containerd-shim-example-v2/internal/waitlist"
	"github.com/example/containerd-shim-example-v2/reaper"
)

// defaultStopTimeout bounds the wait for a killed holder's exit to be reaped
// (Config.StopTimeout).
const defaultStopTimeout = 10 * time.Second

// Pod states, as CRI names them in SandboxStatus.
const (
	stateReady    = "SANDBOX_READY"
	stateNotReady = "SANDBOX_NOTREADY"
)

// phase is where a pod is in its life: created (CreateSandbox) -> running
// (StartSandbox: files made, holder up) -> stopped (StopSandbox, or the
// holder died). Shutdown removes the pod from any phase.
type phase int

const (
	phaseCreated phase = iota
	phaseRunning
	phaseStopped
)

func (p phase) String() string {
	return [...]string{"created", "running", "stopped"}[p]
}

// pod is one sandbox.
//
// Locking: op is held across start, stop and shutdown, so those run one at a
// time per pod, and guards files; mu guards the fields below it and is only
// held for a read or an update, so a status query never waits for a start.
// done is closed, and the waiters called, once, under mu (closeDoneLocked).
type pod struct {
	id     string
	bundle string
	cfg    PodConfig
	netns  string
	cgroup string // the holder's cgroup (Service.holderCgroup); empty: the shim's
	reaper *reaper.Reaper
	done   chan struct{} // closed when the pod stops (holder exit, or stop before start)

	// metricsCg is the pod cgroup SandboxMetrics reads, found on its first
	// call: CRI polls every pod every second, and finding it walks every
	// hierarchy (a directory read and a stat each). Set once, without a
	// lock: two first calls at once both look it up, and either result is
	// the same cgroup.
	metricsCg atomic.Pointer[cgroup.Cgroup]

	op    sync.Mutex
	files files

	mu         sync.Mutex
	phase      phase
	holder     *holder.Holder
	createdAt  time.Time
	exitedAt   time.Time
	exitStatus uint32
	// waiters are the open WaitSandbox calls (onDone); fired when done is closed.
	waiters waitlist.List
	// owed counts the answers still to be written once the pod has left
	// the service (leave); nil while it is in it.
	owed *atomic.Int32
}

// onDone calls fn once the pod has stopped: at once if it has, else when it
// stops, from a goroutine of its own. withdraw forgets a call not made yet
// (containerd hung up). A WaitSandbox stays open for a pod's whole life, and
// this keeps it without a goroutine parked until then.
func (p *pod) onDone(fn func()) (withdraw func()) {
	p.mu.Lock()
	w, ok := p.waiters.Add(&p.mu, fn)
	if ok && p.owed != nil {
		// Its lookup found the pod before it left: owed as well.
		p.oweLocked()
	}
	p.mu.Unlock()
	if !ok {
		fn()
		return func() {}
	}
	return func() { w() }
}

// closeDoneLocked marks the pod stopped for its waiters: done is closed and
// the registered calls run (off this lock and goroutine: an exit callback of
// the reaper must not wait for an answer's write). Called with mu held.
func (p *pod) closeDoneLocked() {
	close(p.done)
	p.waiters.Fire(&p.mu)
}

// metricsCgroup is the pod's cgroup for SandboxMetrics, found once: a
// pod's cgroup parent does not change. A failed lookup is not kept, so a
// cgroup made later is found by a later call.
func (p *pod) metricsCgroup(root, path string) (*cgroup.Cgroup, error) {
	if cg := p.metricsCg.Load(); cg != nil {
		return cg, nil
	}
	cg, err := cgroup.AtPath(root, path)
	if err != nil {
		return nil, err
	}
	p.metricsCg.Store(cg)
	return cg, nil
}

func newPod(id, bundlePath string, cfg PodConfig, netns, cgroup string, r *reaper.Reaper) *pod {
	return &pod{
		id: id, bundle: bundlePath, cfg: cfg, netns: netns, cgroup: cgroup, reaper: r,
		done:      make(chan struct{}),
		files:     files{bundle: bundlePath},
		createdAt: time.Now(),
	}
}

// start makes the pod's files and cgroup and starts its holder, which it
// returns: the caller answers with the holder it started, even if that has
// exited (and the pod stopped) since. On error everything made so far is
// undone and the pod stays created.
func (p *pod) start() (_ *holder.Holder, retErr error) {
	p.op.Lock()
	defer p.op.Unlock()
	if ph := p.currentPhase(); ph != phaseCreated {
		return nil, fmt.Errorf("sandbox %s is %s, not created: %w", p.id, ph, errdefs.ErrFailedPrecondition)
	}
	defer func() {
		if retErr != nil {
			if err := p.files.cleanup(); err != nil {
				slog.Warn("undo a failed sandbox start", "sandbox", p.id, "error", err)
			}
		}
	}()
	cg := p.cgroup
	p.files.rec.Cgroup = cg
	root, state, ok := criDirs(p.bundle, p.id)
	if err := p.files.setUp(p.cfg, root, state, ok); err != nil {
		return nil, err
	}
	if cg != "" {
		if err := holder.CreateCgroup(holder.CgroupRoot, cg); err != nil {
			return nil, err
		}
	}
	h, err := holder.Start(holder.Config{
		ID:     p.id,
		NetNS:  p.netns,
		NewIPC: p.cfg.IPC != ModeNode,
		NewUTS: p.cfg.Network != ModeNode,
		// Unless the pod runs in the node's: CRI hands a container that asks
		// for Pid POD (or leaves its namespace options out, as crictl's
		// configs do) the holder's, as it hands it the pause container's,
		// which is always one of its own.
		NewPID: p.cfg.PID != ModeNode,
		// A host-network pod keeps the node's UTS namespace, and its name.
		Hostname: p.cfg.Hostname,
		Sysctls:  podSysctls(p.cfg, p.netns),
		Cgroup:   cg,
		Reaper:   p.reaper,
	})
	if err != nil {
		return nil, err
	}
	p.mu.Lock()
	p.holder = h
	p.phase = phaseRunning
	p.createdAt = h.Started
	p.mu.Unlock()
	p.watch(h)
	return h, nil
}

func (p *pod) currentPhase() phase {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.phase
}

// watch has the reaper record the holder's exit (exited) as one of its exit
// callbacks, not in a goroutine of the pod's own that receives it: an in-place
// upgrade pauses the reaper, and Pause waits for the callbacks under way, so a
// holder reaped just before the pause is recorded before the pod is exported.
// A goroutine could still be waiting to run then: the pod would be handed over
// as running with a pid already reaped, whose exit the successor would never
// see (a pod READY for good, a SIGKILL at Stop for a pid that may be reused).
func (p *pod) watch(h *holder.Holder) {
	p.reaper.Then(h.Pid, h.Exit(), p.exited)
}

// exited records the holder's exit: the pod is stopped from then on, however
// the holder ended (Stop, or killed by someone else).
func (p *pod) exited(e reaper.Exit) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.phase = phaseStopped
	p.exitStatus = uint32(e.Status)
	p.exitedAt = e.Time
	p.closeDoneLocked()
}

// stop ends the pod's holder and waits up to timeout for its exit; the pod's
// /dev/shm is released. Stopping a stopped pod does nothing. A holder not
// reaped in time (a reaper paused by an upgrade, a kernel slow to tear down
// its namespaces) is DeadlineExceeded, which CRI retries, and the pod stays
// running until its exit is recorded.
func (p *pod) stop(timeout time.Duration) error {
	p.op.Lock()
	defer p.op.Unlock()
	return p.stopLocked(timeout)
}

func (p *pod) stopLocked(timeout time.Duration) error {
	p.mu.Lock()
	ph, h := p.phase, p.holder
	if ph == phaseCreated {
		p.phase = phaseStopped
		p.exitedAt = time.Now()
		p.closeDoneLocked()
	}
	p.mu.Unlock()
	if ph == phaseRunning {
		h.Stop()
		select {
		case <-p.done: // watch recorded the exit
		case <-time.After(timeout):
			return fmt.Errorf("sandbox %s: holder %d was killed but its exit was not reaped within %v: %w",
				p.id, h.Pid, timeout, context.DeadlineExceeded)
		}
	}
	return p.files.unmountShm()
}

// shutdown stops the pod and removes everything it made outside the bundle.
func (p *pod) shutdown(timeout time.Duration) error {
	p.op.Lock()
	defer p.op.Unlock()
	return errors.Join(p.stopLocked(timeout), p.files.cleanup())
}

// status is a snapshot for SandboxStatus.
type status struct {
	pid        int
	state      string
	phase      phase
	createdAt  time.Time
	exitedAt   time.Time
	exitStatus uint32
}

func (p *pod) status() status {
	p.mu.Lock()
	defer p.mu.Unlock()
	st := status{state: stateNotReady, phase: p.phase, createdAt: p.createdAt, exitedAt: p.exitedAt, exitStatus: p.exitStatus}
	if p.phase == phaseRunning {
		st.state = stateReady
		st.pid = p.holder.Pid
	}
	return st
}
