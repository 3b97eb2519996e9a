package process

import (
	"fmt"
	"time"

	"github.com/containerd/errdefs"

	"github.com/example/containerd-shim-example-v2/internal/condwait"
)

// launchGate keeps a freeze (a Pause, or CRIU's during a checkpoint) and an
// exec's launch apart. A container frozen while the runtime launches an
// exec freezes the launch half-way (runc's `init` joins the frozen cgroup),
// and the runtime's exec then waits for it until someone resumes the
// container: the exec's Start, and every request on that exec, would hang
// until then; CRIU would dump the half-made process with the container. So
// a Pause or a Checkpoint first waits for the launches under way (they take
// milliseconds; bounded by pauseLaunchWait), and a launch while either is
// under way is FailedPrecondition, as Exec in a paused container is.
// Guarded by Container.mu (with Container.checkpoints, the checkpoints'
// count); execsIdle is broadcast when the last launch ends while a freeze
// waits.
type launchGate struct {
	launching int  // exec launches under way
	pausing   bool // a Pause is under way
}

// pauseLaunchWait bounds a Pause's wait for exec launches under way (a
// Docker health check, a kubelet probe): past it the Pause is refused.
const pauseLaunchWait = 5 * time.Second

// beginExecLaunchLocked admits an exec's launch, unless a Pause or a
// Checkpoint is under way. c.mu must be held; endExecLaunch must follow an
// admitted one.
func (c *Container) beginExecLaunchLocked(execID string) error {
	if c.gate.pausing {
		return fmt.Errorf("cannot start exec %q: container %s is being paused: %w", execID, c.ID, errdefs.ErrFailedPrecondition)
	}
	if c.checkpoints > 0 {
		return fmt.Errorf("cannot start exec %q: %w", execID, c.checkpointBusyError(OpExec))
	}
	c.gate.launching++
	return nil
}

func (c *Container) endExecLaunch() {
	c.mu.Lock()
	c.gate.launching--
	if c.gate.launching == 0 && (c.gate.pausing || c.checkpoints > 0) {
		c.execsIdle.Broadcast()
	}
	c.mu.Unlock()
}

// beginPause admits a Pause once no exec is being launched: new launches
// are refused from here on, and those under way are waited for, up to
// pauseLaunchWait. A Pause during a checkpoint is refused (checkpointBusy).
// endPause must follow an admitted one. The caller holds the init's lock.
func (c *Container) beginPause() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.checkpoints > 0 {
		return c.checkpointBusyError(OpPause)
	}
	c.gate.pausing = true
	if err := c.awaitLaunchesLocked(OpPause); err != nil {
		c.gate.pausing = false
		return err
	}
	return nil
}

// awaitLaunchesLocked waits, up to pauseLaunchWait, for the exec launches a
// freeze (op: a Pause or a Checkpoint, already marked so that new launches
// are refused) found under way. c.mu must be held.
func (c *Container) awaitLaunchesLocked(op Op) error {
	if !condwait.Until(c.execsIdle, pauseLaunchWait, func() bool { return c.gate.launching == 0 }) {
		return fmt.Errorf("cannot %s %s: an exec being started did not finish within %v: %w", op, c.ID, pauseLaunchWait, errdefs.ErrFailedPrecondition)
	}
	return nil
}

// Pausing reports whether a Pause is under way: the runtime is freezing the
// container, or the Pause waits for exec launches first. The task service
// reports its running processes as pausing then, as the stock shim does.
func (c *Container) Pausing() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.gate.pausing
}

func (c *Container) endPause() {
	c.mu.Lock()
	c.gate.pausing = false
	c.mu.Unlock()
}
