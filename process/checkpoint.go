package process

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/containerd/errdefs"

	"github.com/example/containerd-shim-example-v2/oci"
)

// Checkpoint dumps the container with CRIU into opts.ImagePath and runs
// onCheckpointed once it is done. Unless LeaveRunning, the container stops
// afterwards: its exit is reported as usual, but after onCheckpointed. CRIU
// kills the container before the runtime has finished (runc then removes
// its cgroups and state), and the exit, reported at once, came before the
// checkpoint's own report, or even after the task's deletion.
func (c *Container) Checkpoint(ctx context.Context, opts oci.CheckpointOpts, onCheckpointed func()) error {
	if opts.ImagePath == "" {
		return fmt.Errorf("checkpoint %s: no image path: %w", c.ID, errdefs.ErrInvalidArgument)
	}
	// Checked and counted under the init's lock, which a Pause or Resume
	// holds for its whole runtime call: either one ends before this
	// begins, or it finds the checkpoint counted and is refused
	// (checkpointBusy). CRIU freezes and thaws the container itself, and
	// a pause in between leaves it running where the task says paused,
	// or fails the dump.
	p := c.init
	p.mu.Lock()
	if err := p.checkLocked(OpCheckpoint); err != nil {
		p.mu.Unlock()
		return err
	}
	// Only a checkpoint that stops the container holds its exit back: one
	// that leaves it running has no exit of its own to order, and an init
	// that ends by itself meanwhile is reported at once.
	stopping := 0
	if !opts.LeaveRunning {
		stopping = 1
	}
	c.mu.Lock()
	if c.checkpoints > 0 {
		// CRIU cannot dump one process tree twice at once, and the two
		// would share the default work directory, which the first to end
		// removes. (The stock shim runs the second after the first.)
		c.mu.Unlock()
		p.mu.Unlock()
		return fmt.Errorf("checkpoint %s: another checkpoint is under way: %w", c.ID, errdefs.ErrFailedPrecondition)
	}
	c.checkpoints++
	c.stoppingCheckpoints += stopping
	c.mu.Unlock()
	p.mu.Unlock()
	defer func() {
		c.mu.Lock()
		c.checkpoints--
		if c.stoppingCheckpoints -= stopping; stopping > 0 && c.stoppingCheckpoints == 0 {
			c.execsIdle.Broadcast()
		}
		c.mu.Unlock()
	}()
	// CRIU freezes the container: an exec the runtime is launching would
	// be frozen half-way and dumped so (launchGate). Counted above, the
	// checkpoint refuses new launches; those under way end first.
	c.mu.Lock()
	err := c.awaitLaunchesLocked(OpCheckpoint)
	c.mu.Unlock()
	if err != nil {
		return err
	}
	work := opts.WorkPath
	if work == "" {
		work = filepath.Join(c.Bundle, criuWorkDir)
		opts.WorkPath = work
		defer os.RemoveAll(work)
	}
	begun := time.Now()
	if err := c.rt.Checkpoint(ctx, c.ID, opts); err != nil {
		// CRIU's own log says why; keep it beside the bundle, quote it, and
		// say where it is: the runtime's message names the work directory's
		// copy, gone once the default work directory is removed.
		data := criuLogOf(filepath.Join(work, "dump.log"), begun)
		kept := ""
		if data != nil {
			dumpLog := filepath.Join(c.Bundle, "criu-dump.log")
			if werr := os.WriteFile(dumpLog, data, 0o600); werr == nil {
				kept = "; CRIU log kept at " + dumpLog
			}
		}
		return fmt.Errorf("checkpoint %s: %w%s%s", c.ID, err, criuLogTail(data), kept)
	}
	if onCheckpointed != nil {
		onCheckpointed()
	}
	return nil
}

// criuLogTail returns the last error lines of a CRIU log, for an error message.
func criuLogTail(data []byte) string {
	var errs []string
	for _, line := range strings.Split(string(data), "\n") {
		if strings.Contains(line, "Error") || strings.Contains(line, "error") {
			errs = append(errs, strings.TrimSpace(line))
		}
	}
	if len(errs) > 3 {
		errs = errs[len(errs)-3:]
	}
	if len(errs) == 0 {
		return ""
	}
	return " (criu: " + strings.Join(errs, "; ") + ")"
}

// criuWorkDir is the bundle's directory for CRIU's files (its logs and
// statistics) when the runtime options set no criu_work_path. Without one,
// CRIU writes them into the image directory, which a restore must be able
// to read only (a read-only or shared checkpoint); the stock shim gives
// CRIU a work directory of the task's too.
const criuWorkDir = "criu-work"

// criuRestoreLog is the name runc and crun give CRIU's restore log, in the
// restore's work directory (the image directory when none is set).
const criuRestoreLog = "restore.log"

// coarseClockTick is how far a file's modification time may lag the clock
// the shim reads: the kernel stamps files from a clock updated once a tick
// (10 ms at the slowest, HZ=100).
const coarseClockTick = 10 * time.Millisecond

// restoreLogNote says why CRIU failed a restore, as its log has it, and
// where that log is. runc's own error names it only as "restore.log",
// relative to a work directory the caller never sees, and says nothing of
// the reason (on a kernel CRIU cannot work with, the caller learnt nothing).
// Only a log of the attempt that began at begun is quoted (criuLogOf).
func restoreLogNote(opts oci.CheckpointOpts, begun time.Time) string {
	dir := opts.WorkPath
	if dir == "" {
		dir = opts.ImagePath
	}
	log := filepath.Join(dir, criuRestoreLog)
	data := criuLogOf(log, begun)
	if data == nil {
		return ""
	}
	return criuLogTail(data) + "; CRIU log at " + log
}

// criuLogOf reads the CRIU log at path if the attempt that began at begun
// wrote it, else returns nil. An older one is an earlier attempt's, left in
// a work or image directory the caller uses again: when the runtime fails
// before it runs CRIU, that log's reason is not this failure's.
func criuLogOf(path string, begun time.Time) []byte {
	st, err := os.Stat(path)
	if err != nil || st.ModTime().Before(begun.Add(-coarseClockTick)) {
		return nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	return data
}

// checkpointBusy is FailedPrecondition while a checkpoint of the container
// runs (see Checkpoint): Pause and Resume wait for none, as State and Kill
// do not, but they may not run inside one. The caller holds the init's lock.
func (c *Container) checkpointBusy(op Op) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.checkpoints > 0 {
		return c.checkpointBusyError(op)
	}
	return nil
}

func (c *Container) checkpointBusyError(op Op) error {
	return fmt.Errorf("cannot %s container %s while it is being checkpointed: %w", op, c.ID, errdefs.ErrFailedPrecondition)
}
