package process

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/containerd/errdefs"

	"github.com/example/containerd-shim-example-v2/oci"
)

// Checkpoint dumps the container with CRIU into opts.ImagePath. Unless
// LeaveRunning, the container stops afterwards (its exit is reported as usual).
func (c *Container) Checkpoint(ctx context.Context, opts oci.CheckpointOpts) error {
	if err := c.init.checkOp(OpCheckpoint); err != nil {
		return err
	}
	if opts.ImagePath == "" {
		return fmt.Errorf("checkpoint %s: no image path: %w", c.ID, errdefs.ErrInvalidArgument)
	}
	work := opts.WorkPath
	if work == "" {
		work = filepath.Join(c.Bundle, "criu-work")
		opts.WorkPath = work
		defer os.RemoveAll(work)
	}
	if err := c.rt.Checkpoint(ctx, c.ID, opts); err != nil {
		// CRIU's own log says why; keep it beside the bundle, quote it, and
		// say where it is: the runtime's message names the work directory's
		// copy, gone once the default work directory is removed.
		data, _ := os.ReadFile(filepath.Join(work, "dump.log"))
		kept := ""
		if data != nil {
			dumpLog := filepath.Join(c.Bundle, "criu-dump.log")
			if werr := os.WriteFile(dumpLog, data, 0o600); werr == nil {
				kept = "; CRIU log kept at " + dumpLog
			}
		}
		return fmt.Errorf("checkpoint %s: %w%s%s", c.ID, err, criuLogTail(data), kept)
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
