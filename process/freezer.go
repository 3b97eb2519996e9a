package process

import (
	"context"

	"github.com/example/containerd-shim-example-v2/oci"
)

// A container's freezer as the runtime leaves it. runc's pause and resume
// write the cgroup's freezer and wait for it to settle; its kill --all
// freezes the cgroup, signals and thaws it. A runtime that fails after the
// write (killed at its request's deadline) or that leaves the cgroup in
// another state than the shim expects has changed the container all the
// same, and the task's state must follow: a task that says RUNNING while
// frozen refuses Resume and its Pause fails "not running", and nothing
// thaws it. The runtime's own word (`state`) decides.

// runtimeState is the runtime's `state` of the container, asked on a
// bounded context of its own: the request's may be what ended the
// runtime's last command. timedOut: the runtime did not answer in time.
func (c *Container) runtimeState(parent context.Context) (state oci.ContainerState, timedOut bool, err error) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(parent), stateCheckTimeout)
	defer cancel()
	state, err = c.rt.StateOf(ctx, c.ID)
	return state, ctx.Err() != nil, err
}

// runtimeStatus is the container's status as the runtime reports it
// ("created", "running", "paused", "stopped"), or "" when it cannot say.
func (c *Container) runtimeStatus(parent context.Context) string {
	st, _, err := c.runtimeState(parent)
	if err != nil {
		return ""
	}
	return st.Status
}

// followFreezer is a pause's or resume's outcome as the runtime sees it:
// nil, whatever err says, when the runtime reports the container in want
// ("paused", "running") after a failure. A runc killed at the request's
// deadline after it had written the freezer left the container frozen (or
// thawed) while the task kept its old state.
func (c *Container) followFreezer(ctx context.Context, err error, want string) error {
	if err != nil && c.runtimeStatus(ctx) == want {
		return nil
	}
	return err
}

// followFreezerAfterKillAll sets a paused container's state to the
// runtime's after a signal to its every process: runc's kill --all thaws
// the cgroup after signalling, so the container runs again while its state
// said paused and a Resume failed "not paused" (the stock shim's too);
// crun's leaves it frozen. Not after SIGKILL, which ends it: its exit says
// the rest. The init's lock orders it with a Pause or Resume.
func (c *Container) followFreezerAfterKillAll(ctx context.Context) {
	p := c.init
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.status == Paused && c.runtimeStatus(ctx) == "running" {
		p.setLocked(func() { p.status = Running })
	}
}

// thawAfterKillAllFailed thaws a running container that a failed signal to
// its every process left frozen: runc killed between kill --all's freeze
// and its thaw. Only a task that is RUNNING with no Pause or checkpoint
// under way (CRIU freezes the container too): the freeze is then the
// runtime's own. The init's lock orders it with a Pause, Resume or Update;
// a Kill does not wait for it (a Start whose runtime hangs holds it): when
// the lock is busy, the thaw follows in the background once it is free,
// everything checked again then.
func (c *Container) thawAfterKillAllFailed(ctx context.Context) {
	p := c.init
	thaw := func() {
		defer p.mu.Unlock()
		if p.status != Running || c.Pausing() || c.checkpointBusy(OpResume) != nil || c.runtimeStatus(ctx) != "paused" {
			return
		}
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), stateCheckTimeout)
		defer cancel()
		_ = c.rt.Resume(rctx, c.ID)
	}
	if p.mu.TryLock() {
		thaw()
		return
	}
	ctx = context.WithoutCancel(ctx)
	go func() {
		p.mu.Lock()
		thaw()
	}()
}
