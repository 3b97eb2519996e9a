package direct

import (
	"os"
	"testing"
	"time"

	taskv3 "github.com/containerd/containerd/api/runtime/task/v3"
	runcopts "github.com/containerd/containerd/api/types/runc/options"
	tasktypes "github.com/containerd/containerd/api/types/task"
)

// While the runtime freezes a container, State reports the task and its
// running exec as PAUSING, then PAUSED once the freeze has succeeded, as the
// stock shim does (PROTOCOL.md §3.3); they read RUNNING throughout before.
func TestStateIsPausingWhileThePauseRuns(t *testing.T) {
	t.Parallel()
	wrapper, begun, release := runcWaitingAt(t, "pause")
	env := NewEnv(t)
	c := env.Run(t, Config{Mode: Bootstrap, Name: "pausing", Args: loopArgs, NullIO: true,
		Options: runcOptions(t, &runcopts.Options{BinaryName: wrapper})})
	ctx := TestContext(t, time.Minute)
	if _, err := c.Task().Start(ctx, &taskv3.StartRequest{ID: c.ID}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Task().Exec(ctx, c.ExecRequest(t, "e1", loopArgs, nil)); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Task().Start(ctx, &taskv3.StartRequest{ID: c.ID, ExecID: "e1"}); err != nil {
		t.Fatal(err)
	}
	states := func() (task, exec tasktypes.Status) {
		t.Helper()
		ts, err := c.Task().State(ctx, &taskv3.StateRequest{ID: c.ID})
		if err != nil {
			t.Fatal(err)
		}
		es, err := c.Task().State(ctx, &taskv3.StateRequest{ID: c.ID, ExecID: "e1"})
		if err != nil {
			t.Fatal(err)
		}
		return ts.Status, es.Status
	}
	paused := make(chan error, 1)
	go func() {
		_, err := c.Task().Pause(ctx, &taskv3.PauseRequest{ID: c.ID})
		paused <- err
	}()
	until(t, "the runtime's pause begins", func() bool {
		select {
		case err := <-paused:
			t.Fatalf("Pause answered before the runtime's pause began: %v", err)
		default:
		}
		_, err := os.Stat(begun)
		return err == nil
	})
	if task, exec := states(); task != tasktypes.Status_PAUSING || exec != tasktypes.Status_PAUSING {
		t.Errorf("while the runtime pauses: task %v, exec %v; want PAUSING, PAUSING", task, exec)
	}
	if err := os.WriteFile(release, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := <-paused; err != nil {
		t.Fatalf("Pause: %v", err)
	}
	if task, exec := states(); task != tasktypes.Status_PAUSED || exec != tasktypes.Status_PAUSED {
		t.Errorf("after the pause: task %v, exec %v; want PAUSED, PAUSED", task, exec)
	}
	if _, err := c.Task().Resume(ctx, &taskv3.ResumeRequest{ID: c.ID}); err != nil {
		t.Fatal(err)
	}
	if task, exec := states(); task != tasktypes.Status_RUNNING || exec != tasktypes.Status_RUNNING {
		t.Errorf("after the resume: task %v, exec %v; want RUNNING, RUNNING", task, exec)
	}
}
