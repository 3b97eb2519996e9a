package process

import (
	"fmt"

	"github.com/containerd/errdefs"
)

// execLaunchError wraps the failure of an exec's launch. When the
// container was no place to exec in by the time the runtime refused (its
// init exiting: a kubelet stopping the pod while a probe execs; or frozen),
// the failure is FailedPrecondition, as the same Start gets once the shim
// has processed the exit or the pause, rather than the runtime's message
// alone, which reaches containerd as Unknown. The init's state is read, not
// waited for: the caller holds the exec's lock, and the init's exit waits
// for running execs.
func (c *Container) execLaunchError(execID string, err error) error {
	st := c.init.State()
	switch {
	case st.Status == Paused:
		return fmt.Errorf("exec %q in %s: the container is paused: %w: %w", execID, c.ID, err, errdefs.ErrFailedPrecondition)
	case st.Status == Stopped || st.Status == Deleted || c.initGone(st.Pid):
		return fmt.Errorf("exec %q in %s: its init has exited: %w: %w", execID, c.ID, err, errdefs.ErrFailedPrecondition)
	}
	return fmt.Errorf("exec %q in %s: %w", execID, c.ID, err)
}

// initStartError wraps the failure of the init's start. A Kill does not wait
// for a Start (it is how a client ends a start that hangs; see Kill), so
// one may end the created init while the runtime starts it, and the runtime
// then refuses a container whose init is gone ("cannot start a container
// that has stopped", or "already running" while the init is still in its
// exit). That is a state the caller raced, FailedPrecondition as for an
// exec, not the runtime's message alone (Unknown). The stock shim orders
// the Kill after the Start instead.
func (c *Container) initStartError(pid int, err error) error {
	if c.initGone(pid) {
		return fmt.Errorf("start container %s: its init has exited: %w: %w", c.ID, err, errdefs.ErrFailedPrecondition)
	}
	return fmt.Errorf("start container %s: %w", c.ID, err)
}
