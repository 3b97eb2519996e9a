package direct

import (
	"strings"
	"sync"
	"testing"
	"time"

	taskv3 "github.com/containerd/containerd/api/runtime/task/v3"
	tasktypes "github.com/containerd/containerd/api/types/task"
)

// Requests in every phase of a task and of an exec (created, started,
// failed to start, paused, stopped, deleted) get the errdefs class the
// stock shim gives, or a clearer one (PROTOCOL.md §3.2, §3.3). The classes
// here were checked one by one against the current shim; each is a class a
// client acts on.
func TestRequestsInEveryPhase(t *testing.T) {
	t.Parallel()
	env := NewEnv(t)
	c := env.Launch(t, Config{Mode: Bootstrap, Name: "phase", Args: loopArgs, NullIO: true})
	ctx := TestContext(t, time.Minute)
	api := c.Task()

	// Racing Creates of one id: exactly one wins, the rest are AlreadyExists.
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := api.Create(ctx, c.CreateRequest())
			errs[i] = err
			if err == nil {
				c.Pid = r.GetPid()
			}
		}()
	}
	wg.Wait()
	won := 0
	for _, err := range errs {
		if err == nil {
			won++
			continue
		}
		expectClass(t, "a Create racing another of the same id", err, "AlreadyExists")
	}
	if won != 1 {
		t.Fatalf("%d of %d racing Creates succeeded, want exactly 1", won, len(errs))
	}

	// Created.
	expectClass(t, "Pids of a created task", errOf(api.Pids(ctx, &taskv3.PidsRequest{ID: c.ID})), "")
	expectClass(t, "Stats of a created task", errOf(api.Stats(ctx, &taskv3.StatsRequest{ID: c.ID})), "")
	expectClass(t, "Pause of a created task", errOf(api.Pause(ctx, &taskv3.PauseRequest{ID: c.ID})), "FailedPrecondition")
	expectClass(t, "Resume of a created task", errOf(api.Resume(ctx, &taskv3.ResumeRequest{ID: c.ID})), "FailedPrecondition")
	start(t, ctx, c, "")
	expectClass(t, "Resume of a running task", errOf(api.Resume(ctx, &taskv3.ResumeRequest{ID: c.ID})), "FailedPrecondition")

	// Exec ids that cannot name a process.
	for _, id := range []string{"", "a b", "..", strings.Repeat("a", 5000)} {
		err := errOf(api.Exec(ctx, c.ExecRequest(t, id, loopArgs, nil)))
		expectClass(t, "Exec with the id "+id[:min(len(id), 16)], err, "InvalidArgument")
	}

	// An exec added, never started, deleted: it is gone, and its id is free again.
	addExec(t, ctx, c, "e1", loopArgs, nil)
	expectClass(t, "ResizePty of an exec never started",
		errOf(api.ResizePty(ctx, &taskv3.ResizePtyRequest{ID: c.ID, ExecID: "e1", Width: 80, Height: 24})), "")
	expectClass(t, "CloseIO of an exec never started",
		errOf(api.CloseIO(ctx, &taskv3.CloseIORequest{ID: c.ID, ExecID: "e1", Stdin: true})), "")
	deleteTask(t, ctx, c, "e1")
	expectClass(t, "Start of a deleted exec", errOf(api.Start(ctx, &taskv3.StartRequest{ID: c.ID, ExecID: "e1"})), "NotFound")
	expectClass(t, "Wait of a deleted exec", errOf(api.Wait(ctx, &taskv3.WaitRequest{ID: c.ID, ExecID: "e1"})), "NotFound")
	addExec(t, ctx, c, "e1", []string{"true"}, nil)
	start(t, ctx, c, "e1")
	wait(t, ctx, c, "e1")
	deleteTask(t, ctx, c, "e1")

	// An exec whose Start failed is stopped: it cannot be killed or started
	// again, it can be waited for and deleted.
	addExec(t, ctx, c, "bad", []string{"/nonexistent"}, nil)
	if _, err := api.Start(ctx, &taskv3.StartRequest{ID: c.ID, ExecID: "bad"}); err == nil {
		t.Fatal("Start of an exec of a missing binary succeeded")
	}
	expectStatus(t, ctx, c, "bad", tasktypes.Status_STOPPED)
	expectClass(t, "Kill of an exec that failed to start",
		errOf(api.Kill(ctx, &taskv3.KillRequest{ID: c.ID, ExecID: "bad", Signal: sigKILL})), "NotFound")
	expectClass(t, "second Start of an exec that failed to start",
		errOf(api.Start(ctx, &taskv3.StartRequest{ID: c.ID, ExecID: "bad"})), "FailedPrecondition")
	wait(t, ctx, c, "bad")
	deleteTask(t, ctx, c, "bad")

	// Paused.
	if _, err := api.Pause(ctx, &taskv3.PauseRequest{ID: c.ID}); err != nil {
		t.Fatalf("Pause: %v", err)
	}
	expectClass(t, "second Pause", errOf(api.Pause(ctx, &taskv3.PauseRequest{ID: c.ID})), "FailedPrecondition")
	expectClass(t, "Pids of a paused task", errOf(api.Pids(ctx, &taskv3.PidsRequest{ID: c.ID})), "")
	expectClass(t, "Stats of a paused task", errOf(api.Stats(ctx, &taskv3.StatsRequest{ID: c.ID})), "")
	expectClass(t, "Exec into a paused task", errOf(api.Exec(ctx, c.ExecRequest(t, "p1", []string{"true"}, nil))), "FailedPrecondition")
	expectClass(t, "Delete of a paused task", errOf(api.Delete(ctx, &taskv3.DeleteRequest{ID: c.ID})), "FailedPrecondition")
	if _, err := api.Resume(ctx, &taskv3.ResumeRequest{ID: c.ID}); err != nil {
		t.Fatalf("Resume: %v", err)
	}

	// Stopped, not yet deleted.
	kill(t, ctx, c, "", sigKILL)
	wait(t, ctx, c, "")
	expectClass(t, "Pids of a stopped task", errOf(api.Pids(ctx, &taskv3.PidsRequest{ID: c.ID})), "")
	expectClass(t, "Pause of a stopped task", errOf(api.Pause(ctx, &taskv3.PauseRequest{ID: c.ID})), "FailedPrecondition")
	expectClass(t, "Resume of a stopped task", errOf(api.Resume(ctx, &taskv3.ResumeRequest{ID: c.ID})), "FailedPrecondition")
	expectClass(t, "CloseIO of a stopped task", errOf(api.CloseIO(ctx, &taskv3.CloseIORequest{ID: c.ID, Stdin: true})), "")
	deleteTask(t, ctx, c, "")

	// Deleted.
	expectClass(t, "State of a deleted task", errOf(api.State(ctx, &taskv3.StateRequest{ID: c.ID})), "NotFound")
	expectClass(t, "Pids of a deleted task", errOf(api.Pids(ctx, &taskv3.PidsRequest{ID: c.ID})), "NotFound")
	expectClass(t, "Wait of a deleted task", errOf(api.Wait(ctx, &taskv3.WaitRequest{ID: c.ID})), "NotFound")
	expectClass(t, "second Delete", errOf(api.Delete(ctx, &taskv3.DeleteRequest{ID: c.ID})), "NotFound")
}
