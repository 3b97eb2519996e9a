package integration

import (
	"context"
	"errors"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/containerd/api/services/tasks/v1"
	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/containers"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/oci"
	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"

	"github.com/example/containerd-shim-example-v2/integration/harness"
)

// errorTimeout bounds every call that is expected to fail: a failure must come back, not hang.
const errorTimeout = 30 * time.Second

// Scenario 5a: unknown ids give NotFound, both where containerd answers (unknown task) and
// where the shim answers (unknown exec id of a live task).
func TestUnknownIDsAreNotFound(t *testing.T) {
	forEachFlavor(t, func(t *testing.T, d *harness.Daemon) {
		ctx, _ := d.NewNamespace(t)
		ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		ts := d.Client().TaskService()

		_, err := ts.Kill(ctx, &tasks.KillRequest{ContainerID: "nosuch", Signal: uint32(syscall.SIGKILL)})
		expectNotFound(t, "Kill of unknown task", err)
		_, err = ts.Get(ctx, &tasks.GetRequest{ContainerID: "nosuch"})
		expectNotFound(t, "Get of unknown task", err)
		_, err = ts.Delete(ctx, &tasks.DeleteTaskRequest{ContainerID: "nosuch"})
		expectNotFound(t, "Delete of unknown task", err)

		_, stderr, code, err := d.Ctr(ctx, "task", "kill", "nosuch")
		if err != nil {
			t.Fatalf("ctr task kill: %v", err)
		}
		if code == 0 || !strings.Contains(strings.ToLower(stderr), "not found") {
			t.Errorf("ctr task kill nosuch: exit %d stderr %q, want failure mentioning not found", code, stderr)
		}

		// The shim itself: a live task asked about an exec id it never saw.
		ctr := newContainer(t, ctx, d, "nf1", loopArgs)
		task, _ := startTask(t, ctx, ctr, cio.NullIO)
		_, err = ts.Kill(ctx, &tasks.KillRequest{ContainerID: "nf1", ExecID: "nosuch", Signal: uint32(syscall.SIGKILL)})
		expectNotFound(t, "Kill of unknown exec", err)
		_, err = ts.Get(ctx, &tasks.GetRequest{ContainerID: "nf1", ExecID: "nosuch"})
		expectNotFound(t, "Get (State) of unknown exec", err)
		_, err = ts.DeleteProcess(ctx, &tasks.DeleteProcessRequest{ContainerID: "nf1", ExecID: "nosuch"})
		expectNotFound(t, "DeleteProcess of unknown exec", err)
		if st, err := task.Status(ctx); err != nil || st.Status != containerd.Running {
			t.Errorf("task after the failed calls: status %v err %v, want running", st.Status, err)
		}
	})
}

// Scenario 5b: the same id twice gives AlreadyExists, for the container and for the task,
// and the failed second create leaves the first task alone.
func TestDuplicateIDsAreAlreadyExists(t *testing.T) {
	forEachFlavor(t, func(t *testing.T, d *harness.Daemon) {
		ctx, _ := d.NewNamespace(t)
		ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		c := d.Client()
		const id = "dup1"

		ctr := newContainer(t, ctx, d, id, []string{"sh", "-c", "while :; do sleep 0.2; done"})
		spec, err := ctr.Spec(ctx)
		if err != nil {
			t.Fatal(err)
		}
		_, err = c.NewContainer(ctx, id, containerd.WithRuntime(harness.Runtime(), nil), containerd.WithSpec(spec))
		if !errdefs.IsAlreadyExists(err) {
			t.Errorf("second NewContainer %s: %v, want AlreadyExists", id, err)
		}

		task, _ := startTask(t, ctx, ctr, cio.NullIO)
		pid := task.Pid()
		tctx, tcancel := context.WithTimeout(ctx, errorTimeout)
		_, err = ctr.NewTask(tctx, cio.NullIO)
		tcancel()
		if !errdefs.IsAlreadyExists(err) {
			t.Errorf("second NewTask %s: %v, want AlreadyExists", id, err)
		}
		st, err := task.Status(ctx)
		if err != nil || st.Status != containerd.Running {
			t.Errorf("first task after the failed second create: status %v err %v, want running", st.Status, err)
		}
		if !harness.PidExists(int(pid)) {
			t.Errorf("first task's pid %d is gone after the failed second create", pid)
		}
	})
}

// Scenario 5c: an invalid OCI spec makes NewTask fail within a bounded time and leaves
// nothing behind (no shim, mount, runc state, socket or bundle).
func TestInvalidSpecFailsCleanly(t *testing.T) {
	cases := []struct {
		name string
		opts []oci.SpecOpts
	}{
		{"empty-args", []oci.SpecOpts{func(_ context.Context, _ oci.Client, _ *containers.Container, s *oci.Spec) error {
			s.Process.Args = nil
			return nil
		}}},
		{"relative-cwd", []oci.SpecOpts{oci.WithProcessCwd("relative/dir")}},
	}
	forEachFlavor(t, func(t *testing.T, d *harness.Daemon) {
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				if tc.name == "relative-cwd" && harness.CrunUnderTest() {
					t.Skip("crun 1.8 runs a process with a relative cwd (the runtime validates it, not the shim)")
				}
				ctx, ns := d.NewNamespace(t)
				id := "bad-" + tc.name
				ctr := newContainer(t, ctx, d, id, []string{"true"}, tc.opts...)
				err := createAndStart(t, ctx, ctr)
				if err == nil {
					t.Fatalf("task with an invalid spec (%s) was created and started", tc.name)
				}
				t.Logf("%s: error (%s): %v", tc.name, errCode(err), err)
				expectNoLeftovers(t, d, ns, id)
			})
		}
	})
}

// Scenario 5d: a command that does not exist makes NewTask or Start fail with the runtime's
// "no such file" error within a bounded time, and nothing is left after cleanup.
func TestMissingCommandFailsCleanly(t *testing.T) {
	forEachFlavor(t, func(t *testing.T, d *harness.Daemon) {
		ctx, ns := d.NewNamespace(t)
		const id = "nocmd"
		ctr := newContainer(t, ctx, d, id, []string{"/nonexistent"})
		err := createAndStart(t, ctx, ctr)
		if err == nil {
			t.Fatalf("task running /nonexistent was created and started")
		}
		t.Logf("error (%s): %v", errCode(err), err)
		if !strings.Contains(strings.ToLower(err.Error()), "no such file") {
			t.Errorf("error %q does not mention the missing file (\"no such file\")", err)
		}
		expectNoLeftovers(t, d, ns, id)
	})
}

// createAndStart creates and starts a task that is expected to fail in one of the two
// steps, each bounded by errorTimeout. It returns the first error; when Start was what
// failed, the created task is deleted again (as a client would).
func createAndStart(t *testing.T, ctx context.Context, ctr containerd.Container) error {
	t.Helper()
	cctx, cancel := context.WithTimeout(ctx, errorTimeout)
	defer cancel()
	start := time.Now()
	task, err := ctr.NewTask(cctx, cio.NullIO)
	if err != nil {
		failIfHung(t, "NewTask", err, start)
		return err
	}
	err = task.Start(cctx)
	if err == nil {
		return nil
	}
	failIfHung(t, "Start", err, start)
	dctx, dcancel := context.WithTimeout(ctx, errorTimeout)
	defer dcancel()
	if _, derr := task.Delete(dctx, containerd.WithProcessKill); derr != nil && !errdefs.IsNotFound(derr) {
		t.Errorf("delete of the task whose start failed: %v", derr)
	}
	return err
}

func failIfHung(t *testing.T, what string, err error, start time.Time) {
	t.Helper()
	if errors.Is(err, context.DeadlineExceeded) || errdefs.IsDeadlineExceeded(err) {
		t.Fatalf("%s did not fail within %v (took %v): %v", what, errorTimeout, time.Since(start).Round(time.Millisecond), err)
	}
}

func expectNotFound(t *testing.T, what string, err error) {
	t.Helper()
	err = errgrpc.ToNative(err)
	if !errdefs.IsNotFound(err) {
		t.Errorf("%s: %v (%s), want NotFound", what, err, errCode(err))
	}
}

// errCode names the errdefs class of an error, for messages.
func errCode(err error) string {
	switch {
	case err == nil:
		return "nil"
	case errdefs.IsNotFound(err):
		return "NotFound"
	case errdefs.IsAlreadyExists(err):
		return "AlreadyExists"
	case errdefs.IsInvalidArgument(err):
		return "InvalidArgument"
	case errdefs.IsFailedPrecondition(err):
		return "FailedPrecondition"
	case errdefs.IsNotImplemented(err):
		return "NotImplemented"
	case errdefs.IsDeadlineExceeded(err):
		return "DeadlineExceeded"
	case errdefs.IsUnavailable(err):
		return "Unavailable"
	case errdefs.IsInternal(err):
		return "Internal"
	case errdefs.IsUnknown(err):
		return "Unknown"
	}
	return "untyped"
}
