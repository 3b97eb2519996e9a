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
