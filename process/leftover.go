package process

import (
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"

	"github.com/example/containerd-shim-example-v2/bundle"
)

// leftoverDrainTimeout bounds the wait, all execs together, for the output
// of execs still undeleted when their container is deleted. Their client
// has usually gone (nobody deletes them), so the full IODrainTimeout each
// would only hold the container's Delete.
const leftoverDrainTimeout = time.Second

// releaseExecs ends what the container's execs still hold once its init is
// deleted: containerd deletes a task without deleting its execs (a client
// that went away never does), and nobody can reach them after this. An exec
// that exited gives up its stdio, pidfd and PID file and releases its
// waiters. One still running (it outlived the wait for execs at the init's
// exit) is killed; its waiters get its exit (137) when it comes, but no
// exit event is published: the task it belonged to is gone.
func (c *Container) releaseExecs() {
	c.mu.Lock()
	c.execsReleased = true // an Exec that checked the init before its Delete ends here (Container.Exec)
	c.mu.Unlock()
	deadline := time.Now().Add(leftoverDrainTimeout)
	for _, p := range c.Execs() {
		p.mu.Lock()
		if p.status == Deleted {
			p.mu.Unlock()
			continue
		}
		running := p.status == Running || p.status == Paused
		if running {
			if err := p.sendSignalLocked(unix.SIGKILL); err != nil {
				slog.Warn("kill exec left running at its container's delete", "container", c.ID, "exec", p.ID, "error", err)
			}
		}
		if p.pipes != nil {
			p.pipes.Drain(time.Until(deadline))
			p.pipes.Close()
		}
		p.setLocked(func() { p.status = Deleted })
		p.oweAnswersLocked()
		if !running {
			// A running one's exit releases its waiters (recordExit),
			// with its real status; its pidfd closes then too.
			p.closePidfdLocked()
			p.markExitedLocked()
		}
		p.mu.Unlock()
		_ = os.Remove(filepath.Join(c.Bundle, bundle.ExecPidFile(p.ID)))
		c.removeExec(p.ID)
	}
}
