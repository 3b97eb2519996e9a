package process

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/example/containerd-shim-example-v2/internal/procstat"
)

// Pids lists the host PIDs of every process in the container.
func (c *Container) Pids(ctx context.Context) ([]int, error) {
	st := c.init.State()
	if st.Status == Deleted {
		return nil, fmt.Errorf("container %q: %w", c.ID, errdefs.ErrNotFound)
	}
	if st.Status == Stopped {
		// Nothing runs, but the task is not gone: its exit waits to be
		// collected. containerd 2.x, reconnecting after a restart, takes an
		// empty answer for a leaked shim and deletes the task, losing that
		// exit for Wait; the init's PID says the task still exists.
		return []int{st.Pid}, nil
	}
	if c.hasNoCgroup() {
		// The runtime lists a container from its cgroup, and this one has none
		// (the stock shim's Pids fails there).
		return c.pidsFromProc(st.Pid)
	}
	pids, err := c.rt.Ps(ctx, c.ID)
	if err != nil {
		// Not NotFound even when the runtime has no such container (a
		// checkpoint not restored yet): the containerd releases that check
		// (shouldCleanupShim) delete a task whose Pids says NotFound when
		// they reload their shims after a restart, and keep it on any
		// other error, such as the stock shim's runtime error. (Older ones
		// clean such a task up on any error.)
		return nil, fmt.Errorf("list processes of %s: %w", c.ID, err)
	}
	return pids, nil
}

// Pause freezes the container.
func (c *Container) Pause(ctx context.Context, onPaused func()) error {
	return c.init.transition(OpPause, Paused, func() error {
		if err := c.beginPause(); err != nil {
			return err
		}
		defer c.endPause()
		return c.freezeError(OpPause, c.followFreezer(ctx, c.rt.Pause(ctx, c.ID), "paused"))
	}, onPaused)
}

// Resume thaws the container.
func (c *Container) Resume(ctx context.Context, onResumed func()) error {
	return c.init.transition(OpResume, Running, func() error {
		if err := c.checkpointBusy(OpResume); err != nil {
			return err
		}
		return c.freezeError(OpResume, c.followFreezer(ctx, c.rt.Resume(ctx, c.ID), "running"))
	}, onResumed)
}

// freezeError is a runtime's pause or resume failure, FailedPrecondition
// when the init has exited meanwhile: killed as a pause came, or while
// paused (docker kill, rm -f), the runtime finds it "not running" or "not
// paused" before the shim has processed the exit; FailedPrecondition too for
// a container without a cgroup of its own, which has no freezer. The caller
// holds the init's lock (transition), so its pid field is read directly.
func (c *Container) freezeError(op Op, err error) error {
	if err != nil && c.initGone(c.init.pid) {
		return fmt.Errorf("cannot %s %s: its init has exited: %w", op, c.ID, errdefs.ErrFailedPrecondition)
	}
	return c.needsCgroup(err, fmt.Sprintf("cannot %s %s: it has no cgroup of its own to freeze", op, c.ID))
}

// initGone reports whether the init, of pid, has exited: reaped (its PID
// may since be another process's: the init's exit is recorded as stopped
// only after its running execs, up to seconds later), or a zombie the
// reaper has not got to. Takes c.mu.
func (c *Container) initGone(pid int) bool {
	c.mu.Lock()
	reaped := c.initReaped
	c.mu.Unlock()
	return reaped || (pid > 0 && exitedChild(pid))
}

// exitedChild reports whether pid, a child of the shim, has exited or is
// exiting: reaped, a zombie, or past the start of its exit. An init that is
// PID 1 of its namespace stays in its exit, not yet a zombie, until every
// other process of the namespace has gone: a runtime's exec that joined the
// namespace just before is killed with them and fails ("failed to sync with
// child") while the init still reads as running by its state letter alone.
// (A child's PID cannot be reused before the shim reaps it.)
func exitedChild(pid int) bool {
	st, err := procstat.Read(pid)
	return err != nil || st.Exiting()
}

// Update applies new resource limits (OCI LinuxResources as JSON).
//
// The runtime runs under the init's lock, ordered with a Pause, Resume or
// Start as the stock shim orders them: runc's update under the systemd
// cgroup driver freezes the container around its changes and thaws it
// after, which would undo a Pause that came in between.
func (c *Container) Update(ctx context.Context, resources []byte) error {
	var res specs.LinuxResources
	if err := json.Unmarshal(resources, &res); err != nil {
		return fmt.Errorf("update %s: resources are not valid LinuxResources JSON: %v: %w", c.ID, err, errdefs.ErrInvalidArgument)
	}
	// The runtime gets them encoded again, not as the client wrote them, as
	// the stock shim's go-runc passes them: an explicit null (what some
	// encoders write for an absent field) becomes an absent field. runc
	// decodes the resources over defaults it then dereferences, and a null
	// that cleared one made it crash.
	normalized, err := json.Marshal(&res)
	if err != nil {
		return fmt.Errorf("update %s: encode resources: %w", c.ID, err)
	}
	p := c.init
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.checkLocked(OpUpdate); err != nil {
		return err
	}
	err = c.rt.Update(ctx, c.ID, normalized)
	if err != nil && c.initGone(p.pid) { // "container not running": its exit not processed yet
		return fmt.Errorf("cannot update %s: its init has exited: %w", c.ID, errdefs.ErrFailedPrecondition)
	}
	return c.needsCgroup(err, "update "+c.ID+": it has no cgroup of its own to set limits on")
}

// Stats returns the container's cgroup statistics, encoded, and their type
// URL.
func (c *Container) Stats() ([]byte, string, error) {
	c.mu.Lock()
	cg := c.cg // set late for a restored container (startRestore)
	c.mu.Unlock()
	if cg == nil {
		return nil, "", fmt.Errorf("container %s: cgroup does not exist: %w", c.ID, errdefs.ErrNotFound)
	}
	data, typeURL, err := cg.Metrics()
	if errdefs.IsNotFound(err) { // removed (cgroup.Metrics says so under v1 and v2 alike)
		if data, typeURL, ok := c.metricsOfRemovedCgroup(cg); ok {
			return data, typeURL, nil
		}
		return nil, "", fmt.Errorf("stats of %s: its cgroup is gone (%v): %w", c.ID, err, errdefs.ErrNotFound)
	}
	if err != nil {
		return nil, "", fmt.Errorf("stats of %s: %w", c.ID, err)
	}
	return data, typeURL, nil
}
