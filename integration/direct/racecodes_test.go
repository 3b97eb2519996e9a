package direct

import (
	"testing"
	"time"

	taskv3 "github.com/containerd/containerd/api/runtime/task/v3"
)

// An exec added, then started once its container is paused, is refused as FailedPrecondition
// (the runtime will not exec there), not passed on as the runtime's error
// with no class (Unknown).
func TestExecStartInPausedContainer(t *testing.T) {
	t.Parallel()
	env := NewEnv(t)
	c := env.Run(t, Config{Mode: Bootstrap, Name: "pausex", Args: loopArgs, NullIO: true})
	ctx := TestContext(t, time.Minute)
	api := c.Task()
	start(t, ctx, c, "")
	// Added before the pause (Exec itself refuses a paused container).
	addExec(t, ctx, c, "x", []string{"true"}, nil)
	if _, err := api.Pause(ctx, &taskv3.PauseRequest{ID: c.ID}); err != nil {
		t.Fatalf("Pause: %v", err)
	}
	_, err := api.Start(ctx, &taskv3.StartRequest{ID: c.ID, ExecID: "x"})
	expectClass(t, "Start of an exec in a paused container", err, "FailedPrecondition")
	if _, err := api.Resume(ctx, &taskv3.ResumeRequest{ID: c.ID}); err != nil {
		t.Fatalf("Resume: %v", err)
	}
	deleteTask(t, ctx, c, "x")
	stop(t, ctx, c)
}

// raceRounds is how many containers TestRequestsRacingInitExit kills, half
// of them with an exec's Start, half with a Pause: the request lands in the
// window between the init's death and the shim's processing of it in most
// rounds, not all.
const raceRounds = 16

// An exec's Start and a Pause that meet the init's death (kubelet stopping a
// pod while a probe execs) are FailedPrecondition, as they are once the
// exit has been processed, whether or not the shim has reaped the init by
// the time the runtime refuses: never the runtime's bare error (Unknown).
func TestRequestsRacingInitExit(t *testing.T) {
	t.Parallel()
	env := NewEnv(t)
	for i := 0; i < raceRounds; i++ {
		c := env.Run(t, Config{Mode: Bootstrap, Name: "race", Args: loopArgs, NullIO: true})
		ctx := TestContext(t, time.Minute)
		api := c.Task()
		other := c.Shim.TaskAPI(t, c.Mode.TaskVersion())
		start(t, ctx, c, "")
		pause := i%2 == 1
		if !pause {
			addExec(t, ctx, c, "x", []string{"sleep", "5"}, nil)
		}
		done := make(chan error, 1)
		go func() {
			var err error
			if pause {
				_, err = other.Pause(ctx, &taskv3.PauseRequest{ID: c.ID})
			} else {
				_, err = other.Start(ctx, &taskv3.StartRequest{ID: c.ID, ExecID: "x"})
			}
			done <- err
		}()
		kill(t, ctx, c, "", sigKILL)
		err := <-done
		switch {
		case err != nil && pause:
			expectClass(t, "Pause as the init dies", err, "FailedPrecondition")
		case err != nil:
			expectClass(t, "Start of an exec as the init dies", err, "FailedPrecondition")
		case pause:
			_, _ = api.Resume(ctx, &taskv3.ResumeRequest{ID: c.ID})
		}
		wait(t, ctx, c, "")
		deleteTask(t, ctx, c, "")
	}
}
