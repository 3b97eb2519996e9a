package process

import (
	"fmt"

	"github.com/containerd/errdefs"
)

// launchGate keeps a pause and an exec's launch apart. A container frozen
// while the runtime launches an exec freezes the launch half-way (runc's
// `init` joins the frozen cgroup), and the runtime's exec then waits for it
// until someone resumes the container: the exec's Start, and every request
// on that exec, would hang until then. So a Pause is refused while an exec
// is being launched, and a launch while a Pause is under way, both as
// FailedPrecondition, as Pause is during a checkpoint and Exec in a paused
// container. Guarded by Container.mu.
type launchGate struct {
	launching int  // exec launches under way
	pausing   bool // a Pause is under way
}

// beginExecLaunchLocked admits an exec's launch, unless a Pause is under way.
// c.mu must be held; endExecLaunch must follow an admitted one.
func (c *Container) beginExecLaunchLocked(execID string) error {
	if c.gate.pausing {
		return fmt.Errorf("cannot start exec %q: container %s is being paused: %w", execID, c.ID, errdefs.ErrFailedPrecondition)
	}
	c.gate.launching++
	return nil
}

func (c *Container) endExecLaunch() {
	c.mu.Lock()
	c.gate.launching--
	c.mu.Unlock()
}

// beginPause admits a Pause, unless an exec is being launched; endPause
// must follow an admitted one.
func (c *Container) beginPause() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gate.launching > 0 {
		return fmt.Errorf("cannot pause %s while an exec is being started: %w", c.ID, errdefs.ErrFailedPrecondition)
	}
	c.gate.pausing = true
	return nil
}

func (c *Container) endPause() {
	c.mu.Lock()
	c.gate.pausing = false
	c.mu.Unlock()
}
