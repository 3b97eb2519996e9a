package integration

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	apievents "github.com/containerd/containerd/api/events"
	"github.com/containerd/containerd/api/types/runc/options"
	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/errdefs"

	"github.com/example/containerd-shim-example-v2/integration/harness"
)

// checkpointTimeout bounds a checkpoint: CRIU dumps a two-process container in well under a
// second; a failure must come back, not hang.
const checkpointTimeout = 60 * time.Second

// criuCannotRunHere reports whether a checkpoint error is CRIU failing on this machine's
// kernel rather than anything the shim did: CRIU cannot parse the vDSO of some recent
// kernels ("vdso: Unexpected rt vDSO area bounds", "Failed to fill self vdso symtable").
func criuCannotRunHere(msg string) bool {
	msg = strings.ToLower(msg)
	return strings.Contains(msg, "criu") && strings.Contains(msg, "vdso")
}

// Checkpoint/restore: checkpoint a counting container. Where CRIU cannot work (this kernel),
// the checkpoint must fail promptly with an error that names CRIU, and the container must
// go on counting and be killed and deleted cleanly; the test then skips, quoting the error.
// Where CRIU works, the checkpoint (containerd's checkpoint image) is restored as a new task
// of the container, which counts on from where the checkpoint was taken.
func TestCheckpointRestore(t *testing.T) {
	forEachFlavor(t, func(t *testing.T, d *harness.Daemon) {
		ctx, ns := d.NewNamespace(t)
		ctx, cancel := context.WithTimeout(ctx, 2*checkpointTimeout)
		defer cancel()
		const id = "cp1"
		ctr := newContainer(t, ctx, d, id, countArgs)
		var out lockedBuffer
		task, statusC := startTask(t, ctx, ctr, cio.NewCreator(cio.WithStreams(nil, &out, &out), cio.WithFIFODir(d.FIFODir)))
		waitFor(t, 10*time.Second, "container counting", func() bool { return lastCount(out.String()) >= 3 })

		// Freeze it first so the count at the checkpoint is known (the client's Checkpoint
		// leaves a paused task paused).
		if err := task.Pause(ctx); err != nil {
			t.Fatalf("pause: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
		atCheckpoint := lastCount(out.String())

		evs := subscribeTaskEvents(t, ctx, d, ns)
		start := time.Now()
		cctx, ccancel := context.WithTimeout(ctx, checkpointTimeout)
		img, err := task.Checkpoint(cctx)
		ccancel()
		took := time.Since(start).Round(time.Millisecond)
		if rerr := task.Resume(ctx); rerr != nil {
			t.Fatalf("resume after the checkpoint: %v", rerr)
		}

		if err != nil {
			if errors.Is(err, context.DeadlineExceeded) || errdefs.IsDeadlineExceeded(err) {
				t.Fatalf("checkpoint did not come back within %v: %v", checkpointTimeout, err)
			}
			t.Logf("checkpoint failed after %v (%s): %v", took, errCode(err), err)
			// runc names CRIU; a runtime with no checkpoint command (crun built
			// without CRIU, as Debian's) is NotImplemented.
			if !strings.Contains(strings.ToLower(err.Error()), "criu") && !errdefs.IsNotImplemented(err) {
				t.Errorf("checkpoint error neither names CRIU (the runtime's checkpoint tool) nor is NotImplemented: %v", err)
			}
			// The container is unharmed: it counts on, and dies and goes away cleanly.
			expectRunning(t, ctx, task, "after the failed checkpoint")
			waitFor(t, 10*time.Second, "counting after the failed checkpoint", func() bool {
				return lastCount(out.String()) >= atCheckpoint+3
			})
			checkContiguous(t, out.String())
			if err := task.Kill(ctx, syscall.SIGKILL); err != nil {
				t.Fatalf("kill after the failed checkpoint: %v", err)
			}
			if code := exitCode(t, ctx, statusC); code != 137 {
				t.Errorf("exit status after SIGKILL %d, want 137", code)
			}
			waitIO(t, "counter", task.IO())
			if _, err := task.Delete(ctx); err != nil {
				t.Fatalf("delete after the failed checkpoint: %v", err)
			}
			if err := ctr.Delete(ctx, containerd.WithSnapshotCleanup); err != nil {
				t.Fatalf("delete container after the failed checkpoint: %v", err)
			}
			expectNoLeftovers(t, d, ns, id)
			if t.Failed() {
				return
			}
			if errdefs.IsNotImplemented(err) {
				t.Skipf("checkpoint/restore cannot be exercised with this runtime: it has no checkpoint command; the shim reported it as NotImplemented after %v: %v", took, err)
			}
			if criuCannotRunHere(err.Error()) {
				t.Skipf("checkpoint/restore cannot be exercised on this machine: CRIU fails on this kernel; the shim reported it cleanly after %v: %v", took, err)
			}
			if probe := hostCRIUProblem(ctx); probe != "" {
				if harness.Runtime() == "io.containerd.runc.v2" {
					// Known stock-shim difference: its error only points to CRIU's log file,
					// which is gone with the bundle.
					t.Skipf("checkpoint/restore cannot be exercised on this machine: `criu check` fails (%s); the stock shim's error does not quote CRIU's reason: %v", probe, err)
				}
				t.Fatalf("CRIU cannot work on this machine (`criu check`: %s), but the checkpoint error does not quote CRIU's reason: %v", probe, err)
			}
			t.Fatalf("checkpoint failed: %v", err)
		}

		// CRIU works here. The checkpoint was announced, and the original (left running, the
		// client's default) counts on; then a new task restored from the checkpoint
		// image must count on from the checkpoint. The original is removed first.
		expectCheckpointedEvent(t, evs, id)
		waitFor(t, 10*time.Second, "original counting on after the checkpoint", func() bool {
			return lastCount(out.String()) >= atCheckpoint+3
		})
		c := d.Client()
		defer func() {
			if err := c.ImageService().Delete(context.WithoutCancel(ctx), img.Name()); err != nil && !errdefs.IsNotFound(err) {
				t.Errorf("delete checkpoint image: %v", err)
			}
		}()
		if err := task.Kill(ctx, syscall.SIGKILL); err != nil {
			t.Fatalf("kill the original: %v", err)
		}
		exitCode(t, ctx, statusC)
		waitIO(t, "original", task.IO())
		if _, err := task.Delete(ctx); err != nil {
			t.Fatalf("delete the original: %v", err)
		}

		// A task checkpoint image holds the process state (not a container record): the
		// restore is a new task of the same container, on the same rootfs.
		var rout lockedBuffer
		rtask, rstatusC := startTask(t, ctx, ctr, cio.NewCreator(cio.WithStreams(nil, &rout, &rout), cio.WithFIFODir(d.FIFODir)),
			containerd.WithTaskCheckpoint(img))
		waitFor(t, 10*time.Second, "restored task counting", func() bool { return lastCount(rout.String()) >= atCheckpoint+3 })
		first := strings.SplitN(rout.String(), "\n", 2)[0]
		if first != strconv.Itoa(atCheckpoint+1) {
			t.Errorf("restored task's first line %q, want %d (the checkpoint was taken at %d)", first, atCheckpoint+1, atCheckpoint)
		}
		if err := rtask.Kill(ctx, syscall.SIGKILL); err != nil {
			t.Fatalf("kill restored: %v", err)
		}
		exitCode(t, ctx, rstatusC)
		waitIO(t, "restored", rtask.IO())
		if _, err := rtask.Delete(ctx); err != nil {
			t.Errorf("delete restored: %v", err)
		}
	})
}

// hostCRIUProblem runs `criu check` and returns its complaint when it fails for the kernel
// reason criuCannotRunHere recognises, or "".
func hostCRIUProblem(ctx context.Context) string {
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(cctx, "criu", "check").CombinedOutput()
	if err == nil || !criuCannotRunHere("criu "+string(out)) {
		return ""
	}
	return strings.Join(strings.Fields(string(out)), " ")
}

// expectCheckpointedEvent waits for /tasks/checkpointed of container id and
// returns the events up to it.
func expectCheckpointedEvent(t *testing.T, evs *eventStream, id string) []taskEvent {
	t.Helper()
	return evs.collect(t, 10*time.Second, "/tasks/checkpointed", func(e taskEvent) bool {
		cp, ok := e.Event.(*apievents.TaskCheckpointed)
		return ok && cp.ContainerID == id
	})
}

// requireCRIU skips, quoting `criu check`, where CRIU cannot work on this kernel
// (TestCheckpointRestore proves the shim reports that cleanly); elsewhere, such as the
// cgroup v2 lane's guest, checkpoint/restore must work.
func requireCRIU(t *testing.T, ctx context.Context) {
	t.Helper()
	if probe := hostCRIUProblem(ctx); probe != "" {
		t.Skipf("CRIU cannot work on this kernel (`criu check`: %s)", probe)
	}
}

// withCheckpointExit makes a task checkpoint stop the task once dumped (CRIU's default is to
// leave it running; `ctr checkpoint` without --leave-running asks for this).
func withCheckpointExit(r *containerd.CheckpointTaskInfo) error {
	if r.Options == nil {
		r.Options = &options.CheckpointOptions{}
	}
	opts, ok := r.Options.(*options.CheckpointOptions)
	if !ok {
		return fmt.Errorf("checkpoint options are %T", r.Options)
	}
	opts.Exit = true
	return nil
}

// Checkpoint to a directory, the exit variant: a counting container is dumped into an image
// path of the caller's (no checkpoint image in containerd's store) and stops; a new task of
// the same container restored from that path counts on from the checkpoint, its output
// keeps flowing, and it ends and is deleted cleanly.
func TestCheckpointToPathAndExit(t *testing.T) {
	forEachFlavor(t, func(t *testing.T, d *harness.Daemon) {
		ctx, ns := d.NewNamespace(t)
		ctx, cancel := context.WithTimeout(ctx, 2*checkpointTimeout)
		defer cancel()
		requireCRIU(t, ctx)
		const id = "cpx"
		ctr := newContainer(t, ctx, d, id, countArgs)
		var out lockedBuffer
		task, statusC := startTask(t, ctx, ctr, cio.NewCreator(cio.WithStreams(nil, &out, &out), cio.WithFIFODir(d.FIFODir)))
		waitFor(t, 10*time.Second, "container counting", func() bool { return lastCount(out.String()) >= 3 })
		evs := subscribeTaskEvents(t, ctx, d, ns)

		images := t.TempDir()
		cctx, ccancel := context.WithTimeout(ctx, checkpointTimeout)
		_, err := task.Checkpoint(cctx, containerd.WithCheckpointImagePath(images), withCheckpointExit)
		ccancel()
		if err != nil {
			t.Fatalf("checkpoint to %s: %v", images, err)
		}
		// The checkpoint is announced before the exit it caused (which the
		// client's deletion of the task follows).
		for _, e := range expectCheckpointedEvent(t, evs, id) {
			if x, ok := e.Event.(*apievents.TaskExit); ok && x.ContainerID == id {
				t.Errorf("/tasks/exit of %s (%v) came before its /tasks/checkpointed", id, e)
			}
		}
		exitCodeWithin(t, ctx, statusC, 10*time.Second) // the dump stopped it
		waitIO(t, "checkpointed", task.IO())
		atCheckpoint := lastCount(out.String())
		if dump, _ := filepath.Glob(filepath.Join(images, "*.img")); len(dump) == 0 {
			t.Fatalf("no CRIU image files in %s", images)
		}
		if _, err := task.Delete(ctx); err != nil {
			t.Fatalf("delete the checkpointed task: %v", err)
		}

		var rout lockedBuffer
		rtask, rstatusC := startTask(t, ctx, ctr, cio.NewCreator(cio.WithStreams(nil, &rout, &rout), cio.WithFIFODir(d.FIFODir)),
			containerd.WithRestoreImagePath(images))
		waitFor(t, 10*time.Second, "restored task counting", func() bool { return lastCount(rout.String()) >= atCheckpoint+3 })
		if first := strings.SplitN(rout.String(), "\n", 2)[0]; first != strconv.Itoa(atCheckpoint+1) {
			t.Errorf("restored task's first line %q, want %d (the checkpoint was taken at %d)", first, atCheckpoint+1, atCheckpoint)
		}
		if err := rtask.Kill(ctx, syscall.SIGKILL); err != nil {
			t.Fatalf("kill restored: %v", err)
		}
		if code := exitCode(t, ctx, rstatusC); code != 137 {
			t.Errorf("restored task killed: exit code %d, want 137", code)
		}
		waitIO(t, "restored", rtask.IO())
		if _, err := rtask.Delete(ctx); err != nil {
			t.Errorf("delete restored: %v", err)
		}
		if err := ctr.Delete(ctx, containerd.WithSnapshotCleanup); err != nil {
			t.Errorf("delete container: %v", err)
		}
		expectNoLeftovers(t, d, ns, id)
	})
}
