package direct

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	taskv3 "github.com/containerd/containerd/api/runtime/task/v3"
)

// A container joins its group's daemon (`start` finds it running) while the
// group's last other container is being deleted: containerd's Shutdown for
// the deleted one finds the daemon empty before the joining container's
// Create has come. Before the group service the daemon left then, and the
// Create that followed was refused ("the shim is shutting down"). `start`
// now tells the daemon the Create is coming, and the daemon waits for it.
func TestJoinBeforeTheLastShutdownKeepsTheDaemon(t *testing.T) {
	t.Parallel()
	testJoinBeforeTheLastShutdown(t, false)
}

// The same, with an in-place upgrade between the join and the Shutdown: the
// daemon that took the announcement hands it over, and its successor (same
// pid, new binary) waits for the Create as the first one would have.
func TestJoinIsKeptAcrossAnUpgrade(t *testing.T) {
	t.Parallel()
	testJoinBeforeTheLastShutdown(t, true)
}

func testJoinBeforeTheLastShutdown(t *testing.T, upgrade bool) {
	env := NewEnv(t)
	group := map[string]string{"io.example.v2.group": "g-" + RandID(6)}
	a := env.Run(t, Config{Mode: Bootstrap, Name: "first", Args: loopArgs, NullIO: true, Annotations: group})
	ctx := TestContext(t, WaitTimeout)

	id := "joining-" + RandID(6)
	cgroup := env.CgroupParent + "/" + id
	b := NewBundle(t, t.TempDir(), NewSpec(SpecConfig{Args: loopArgs, CgroupsPath: cgroup, Annotations: group}))
	cleanupLateTask(t, a, id, b, cgroup)
	answer, err := Launch{Mode: a.Mode, Namespace: a.Namespace, ID: id, Bundle: b.Dir, Containerd: a.Containerd}.Run()
	if err != nil {
		t.Fatalf("start of %s: %v", id, err)
	}
	if answer.Socket() != a.Shim.Socket {
		t.Fatalf("start of %s answered %s, want the group's daemon at %s", id, answer.Socket(), a.Shim.Socket)
	}

	if upgrade {
		// The group's other task runs across the switch, and is stopped
		// after it.
		start(t, ctx, a, "")
		upgradeToSelf(t, ctx, a, 1)
		kill(t, ctx, a, "", sigKILL)
		wait(t, ctx, a, "")
	}

	// The group's other container goes, and containerd shuts its shim down.
	deleteTask(t, ctx, a, "")
	if _, err := a.Task().Shutdown(ctx, &taskv3.ShutdownRequest{ID: a.ID}); err != nil {
		t.Fatalf("Shutdown after %s's delete: %v", a.ID, err)
	}
	if !a.Shim.Stays(300 * time.Millisecond) {
		t.Fatalf("the daemon left with %s's Create announced", id)
	}
	other := a.Shim.TaskAPI(t, a.Mode.TaskVersion())
	if _, err := other.Create(ctx, &taskv3.CreateTaskRequest{ID: id, Bundle: b.Dir}); err != nil {
		t.Fatalf("Create %s after the group's other container was shut down: %v", id, err)
	}

	// The joined container is the group's last: its Shutdown ends the daemon.
	if _, err := other.Delete(ctx, &taskv3.DeleteRequest{ID: id}); err != nil {
		t.Fatalf("Delete %s: %v", id, err)
	}
	if _, err := other.Shutdown(ctx, &taskv3.ShutdownRequest{ID: id}); err != nil {
		t.Fatalf("Shutdown after %s's delete: %v", id, err)
	}
	if !a.Shim.Exited(WaitTimeout) {
		t.Fatal("the daemon stayed after its last task's Shutdown")
	}
	if _, err := os.Stat(filepath.Join(a.RuncRoot, id)); !os.IsNotExist(err) {
		t.Errorf("runc state of %s after its Delete: %v, want none", id, err)
	}
}
