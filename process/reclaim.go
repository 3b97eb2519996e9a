package process

import (
	"context"
	"fmt"
	"log/slog"
)

// Reclaiming the runtime's container at the init's exit.
//
// When a container's init has exited, the runtime's record of it (runc's
// state directory, its cgroups) has no further use: the container cannot be
// started, exec'd into or signalled again. containerd removes it only when its
// client asks for the task's Delete, and every caller (ctr run --rm, CRI,
// Docker) asks right after it has seen the exit. The stock shim then runs
// `runc delete` while the caller waits; this shim runs it as soon as the exit
// has been published, while the event travels to containerd and the caller
// turns around, so Delete finds the work done (docs/benchmarks.md, Lifecycle).
//
// What a stopped task still answers is kept: its exit (in the Process), and
// its cgroup's final statistics, read just before the runtime removes the
// cgroup, for a Stats that comes after the exit (peak memory of a finished
// batch job, for one). Poststop hooks run at the exit rather than at Delete.
//
// Exactly one deletion touches the runtime: the eager one, or Delete's when
// Delete (or a checkpoint in progress, whose runtime removes the container
// itself) came first. Delete waits for an eager deletion under way and falls
// back to its own when that one failed.

// reclaim is a Container's eager-deletion state; Container.mu guards it.
type reclaim struct {
	closed        bool         // Delete has begun: no eager deletion from now on
	checkpointing bool         // a checkpoint runs: its runtime stops the container itself
	started       *eagerDelete // the eager deletion, once begun
	finalStats    []byte       // the cgroup's statistics just before its removal
	finalStatsURL string       // their type URL
}

// eagerDelete is one eager deletion; err is valid once done is closed.
type eagerDelete struct {
	done chan struct{}
	err  error
}

// reclaimAfterExit deletes the runtime's container after its init's exit has
// been published, unless Delete or a checkpoint owns that. It runs on a
// goroutine of its own, started by the init's exit callback.
func (c *Container) reclaimAfterExit() {
	c.mu.Lock()
	if c.reclaim.closed || c.reclaim.checkpointing || c.reclaim.started != nil {
		c.mu.Unlock()
		return
	}
	e := &eagerDelete{done: make(chan struct{})}
	c.reclaim.started = e
	c.mu.Unlock()

	if c.cg != nil {
		if data, url, err := c.cg.Metrics(); err == nil {
			c.mu.Lock()
			c.reclaim.finalStats, c.reclaim.finalStatsURL = data, url
			c.mu.Unlock()
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
	e.err = c.rt.Delete(ctx, c.ID, false)
	cancel()
	if e.err != nil {
		// Not lost: Delete runs its own (forced) deletion.
		slog.Warn("runtime delete after exit failed; Delete retries", "container", c.ID, "error", e.err)
	}
	close(e.done)
}

// runtimeReclaimed closes the eager path and reports whether an eager
// deletion removed the runtime's container, waiting for one under way. A
// false means the caller deletes it itself.
func (c *Container) runtimeReclaimed(ctx context.Context) (bool, error) {
	c.mu.Lock()
	c.reclaim.closed = true
	e := c.reclaim.started
	c.mu.Unlock()
	if e == nil {
		return false, nil
	}
	select {
	case <-e.done:
		return e.err == nil, nil
	case <-ctx.Done():
		return false, fmt.Errorf("delete container %s: waiting for the runtime delete after its exit: %w", c.ID, ctx.Err())
	}
}

// setCheckpointing marks a checkpoint in progress (or over): an exit during
// it is the checkpoint's, and its runtime removes the container.
func (c *Container) setCheckpointing(on bool) {
	c.mu.Lock()
	c.reclaim.checkpointing = on
	c.mu.Unlock()
}

// finalStats returns the statistics kept at the exit, if any.
func (c *Container) finalStats() ([]byte, string, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.reclaim.finalStats, c.reclaim.finalStatsURL, c.reclaim.finalStats != nil
}
