package direct

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"testing"

	sandboxv1 "github.com/containerd/containerd/api/runtime/sandbox/v1"
	taskv3 "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/ttrpc"
)

// A Shutdown that found the shim empty commits it to leaving: a Create that
// arrives afterwards (another container of the pod, on its own connection,
// while the daemon still flushes its last events) is refused, not carried
// out by a daemon about to exit. Before, it succeeded, the daemon exited
// a moment later, and the container stayed behind in runc, created,
// mounted and unreported, with nobody left to delete it.
func TestCreateAfterShutdownRefused(t *testing.T) {
	t.Parallel()
	env := NewEnv(t)
	a := env.Run(t, Config{Mode: Bootstrap, Name: "gone", Args: loopArgs, NullIO: true})
	ctx := TestContext(t, WaitTimeout)

	// containerd stops taking events, so the daemon's exit waits for its
	// queue (/tasks/create and /tasks/delete of a) and leaves time for a
	// request to come in after the Shutdown.
	_ = a.Containerd.srv.Close()
	// The later container's connection, open before (containerd keeps one
	// per task; the daemon stops listening once it leaves).
	other := a.Shim.TaskAPI(t, a.Mode.TaskVersion())
	deleteTask(t, ctx, a, "")
	if _, err := a.Task().Shutdown(ctx, &taskv3.ShutdownRequest{ID: a.ID}); err != nil {
		t.Fatalf("Shutdown of the empty shim: %v", err)
	}

	id := "late-" + RandID(6)
	cgroup := env.CgroupParent + "/" + id
	b := NewBundle(t, t.TempDir(), NewSpec(SpecConfig{Args: loopArgs, CgroupsPath: cgroup}))
	cleanupLateTask(t, a, id, b, cgroup)
	_, err := other.Create(ctx, &taskv3.CreateTaskRequest{ID: id, Bundle: b.Dir})
	if err == nil {
		if a.Shim.Exited(WaitTimeout) {
			_, err := os.Stat(filepath.Join(a.RuncRoot, id))
			t.Fatalf("Create %s after Shutdown succeeded, then the shim exited (runc state left: %v)", id, err == nil)
		}
		t.Fatalf("Create %s after Shutdown succeeded", id)
	}
	// The daemon may also have hung up already (ttrpc: closed): either way
	// nothing of the task may exist.
	if c := ErrClass(err); c != "FailedPrecondition" && !errors.Is(err, ttrpc.ErrClosed) {
		t.Errorf("Create after Shutdown: %v (class %s), want FailedPrecondition", err, c)
	}
	if _, err := os.Stat(filepath.Join(a.RuncRoot, id)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("runc state of %s refused after Shutdown: %v, want none", id, err)
	}
	if m, _ := MountsUnder(b.Dir); len(m) > 0 {
		t.Errorf("mounts under the bundle of %s refused after Shutdown: %v", id, m)
	}
}

// The decision to leave spans the Sandbox API too: a CreateSandbox that
// arrives after a Shutdown found the shim empty is refused. Before, it was
// accepted, and the daemon exited a moment later with the pod recorded and
// nobody to shut it down.
func TestCreateSandboxAfterShutdownRefused(t *testing.T) {
	t.Parallel()
	env := NewEnv(t)
	a := env.Run(t, Config{Mode: Bootstrap, Name: "gone", Args: loopArgs, NullIO: true})
	ctx := TestContext(t, WaitTimeout)
	_ = a.Containerd.srv.Close() // the exit waits for the last events
	conn, err := net.Dial("unix", a.Shim.Socket)
	if err != nil {
		t.Fatal(err)
	}
	client := ttrpc.NewClient(conn)
	t.Cleanup(func() { client.Close() })
	pods := sandboxv1.NewTTRPCSandboxClient(client)
	deleteTask(t, ctx, a, "")
	if _, err := a.Task().Shutdown(ctx, &taskv3.ShutdownRequest{ID: a.ID}); err != nil {
		t.Fatalf("Shutdown of the empty shim: %v", err)
	}
	id := "late-pod-" + RandID(6)
	_, err = pods.CreateSandbox(ctx, &sandboxv1.CreateSandboxRequest{SandboxID: id, BundlePath: t.TempDir()})
	if err == nil {
		t.Fatalf("CreateSandbox %s after Shutdown succeeded", id)
	}
	// The daemon may also have hung up already.
	if c := ErrClass(err); c != "FailedPrecondition" && !errors.Is(err, ttrpc.ErrClosed) {
		t.Errorf("CreateSandbox after Shutdown: %v (class %s), want FailedPrecondition", err, c)
	}
	if !a.Shim.Exited(WaitTimeout) {
		t.Error("the shim did not leave after its Shutdown")
	}
}

// cleanupLateTask undoes, even when the test fails, what a task created on
// a's daemon outside the harness (id, in bundle b and cgroup) may have
// left: a's daemon first, so nothing races with the rest.
func cleanupLateTask(t *testing.T, a *Container, id string, b *Bundle, cgroup string) {
	t.Cleanup(func() {
		if err := a.Shim.Kill(); err != nil {
			t.Error(err)
		}
		if err := runcDelete(a.RuncRoot, id); err != nil {
			t.Error(err)
		}
		if err := unmountUnder(b.Dir); err != nil {
			t.Error(err)
		}
		if err := removeCgroupEventually(cgroup); err != nil {
			t.Errorf("cgroup of %s: %v", id, err)
		}
	})
}

// lateTask makes one more task for a's daemon, named name plus a random
// suffix, running args, its bundle in dir (a new temporary directory when
// ""), with cleanupLateTask armed. Creating it is the test's.
func lateTask(t *testing.T, env *Env, a *Container, name, dir string, args []string) *Container {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	id := name + "-" + RandID(6)
	cgroup := env.CgroupParent + "/" + id
	b := NewBundle(t, dir, NewSpec(SpecConfig{Args: args, CgroupsPath: cgroup}))
	cleanupLateTask(t, a, id, b, cgroup)
	return &Container{ID: id, Namespace: a.Namespace, Mode: a.Mode, Bundle: b, Containerd: a.Containerd,
		Shim: &Shim{Socket: a.Shim.Socket, Pid: a.Shim.Pid, Task: a.Task()}, RuncRoot: a.RuncRoot, CgroupPath: cgroup}
}
