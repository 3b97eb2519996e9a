package direct

import (
	"context"
	"os"
	"os/exec"
	"testing"
	"time"

	taskv3 "github.com/containerd/containerd/api/runtime/task/v3"
	tasktypes "github.com/containerd/containerd/api/types/task"

	"github.com/example/containerd-shim-example-v2/integration/harness"
)

// Two daemons of one namespace share the runtime's root, and a caller that
// drives them directly (or two containerd daemons that use the same
// namespace name) may ask the second for an id the first already runs.
// The runtime refuses that create; the failure must leave the first
// daemon's container alone (AlreadyExists), not force-delete the runtime's
// record of that id, which is the other container's; and so must the
// cleanup containerd runs after a failed Create (the shim's `delete`, with
// the failed task's bundle).
func TestCreateOfAnIdAnotherDaemonRunsLeavesItAlone(t *testing.T) {
	t.Parallel()
	env := NewEnv(t)
	a := env.Run(t, Config{Mode: Bootstrap, Name: "sameid", Args: loopArgs, NullIO: true})
	ctx := TestContext(t, time.Minute)
	start(t, ctx, a, "")

	// A daemon of its own: the bundle names a group, so `start` does not
	// find a's daemon.
	other := NewBundle(t, t.TempDir(), NewSpec(SpecConfig{Args: loopArgs, CgroupsPath: env.CgroupParent + "/sameid-other-" + RandID(6),
		Annotations: map[string]string{"io.example.v2.group": "g-" + RandID(6)}}))
	b := StartShim(t, Launch{Mode: Bootstrap, Namespace: a.Namespace, ID: a.ID, Bundle: other.Dir, Containerd: NewContainerd(t)})
	if b.Pid == a.Shim.Pid {
		t.Fatal("the second launch found the first daemon")
	}
	cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	_, err := b.Task.Create(cctx, &taskv3.CreateTaskRequest{ID: a.ID, Bundle: other.Dir})
	cancel()
	if err == nil {
		t.Fatal("a second daemon created an id the runtime already has")
	}
	if ErrClass(err) != "AlreadyExists" {
		t.Errorf("Create of an id the runtime already has: %v, want AlreadyExists", err)
	}
	expectStatus(t, ctx, a, "", tasktypes.Status_RUNNING)
	if !harness.PidExists(int(a.Pid)) {
		t.Fatalf("the first daemon's container (init %d) was killed by the second's failed Create", a.Pid)
	}

	del := exec.CommandContext(ctx, ShimPath(), "-namespace", a.Namespace, "-id", a.ID, "-bundle", other.Dir, "delete")
	del.Dir = other.Dir
	out, err := del.CombinedOutput()
	t.Logf("delete with the failed task's bundle: %v: %q", err, out)
	expectStatus(t, ctx, a, "", tasktypes.Status_RUNNING)
	if !harness.PidExists(int(a.Pid)) {
		t.Fatalf("the first daemon's container (init %d) was killed by the cleanup of the second's failed Create", a.Pid)
	}
	stop(t, ctx, a)
}

// A daemon killed before any cleanup ran leaves its container in the
// runtime's root; a new daemon's Create of that task, from the same
// bundle, removes that leftover (it is this task's) and creates the task.
func TestCreateOverALeftoverOfTheSameBundle(t *testing.T) {
	t.Parallel()
	env := NewEnv(t)
	a := env.Run(t, Config{Mode: Bootstrap, Name: "leftover", Args: loopArgs, NullIO: true})
	ctx := TestContext(t, time.Minute)
	start(t, ctx, a, "")
	old := int(a.Pid)
	if err := a.Shim.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = os.Remove(a.Shim.Socket)
	if !harness.PidExists(old) {
		t.Fatalf("the init %d went with its daemon", old)
	}
	a.Shim = StartShim(t, Launch{Mode: Bootstrap, Namespace: a.Namespace, ID: a.ID, Bundle: a.Bundle.Dir, Containerd: a.Containerd})
	if err := a.Create(ctx); err != nil {
		t.Fatalf("Create over the runtime's leftover of the same bundle: %v", err)
	}
	if harness.PidExists(old) && !isZombie(old) {
		t.Errorf("the leftover's init %d still runs beside the new one %d", old, a.Pid)
	}
	start(t, ctx, a, "")
	stop(t, ctx, a)
}

// isZombie reports whether pid has exited and waits for its parent.
func isZombie(pid int) bool {
	st, err := harness.ReadProcStat(pid)
	return err == nil && st.State == 'Z'
}
