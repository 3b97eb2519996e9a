package direct

import (
	"context"
	"fmt"
	"testing"
	"time"

	taskv3 "github.com/containerd/containerd/api/runtime/task/v3"
)

// pauseRounds is how many exec Starts TestPauseDuringExecStart races with a
// Pause.
const pauseRounds = 10

// hangBound is how long an exec's Start may take before the test calls it
// hung: a launch takes tens of milliseconds.
const hangBound = 10 * time.Second

// A Pause that meets an exec's Start must not freeze the exec's launch
// half-way: the runtime's exec would wait for it until a Resume, and the
// Start (and every request on that exec) would hang. The Pause waits for a
// launch under way and succeeds; a Start that comes once the Pause is under
// way is refused (FailedPrecondition); the Start always answers.
func TestPauseDuringExecStart(t *testing.T) {
	t.Parallel()
	env := NewEnv(t)
	c := env.Run(t, Config{Mode: Bootstrap, Name: "pausing", Args: loopArgs, NullIO: true})
	ctx := TestContext(t, 2*time.Minute)
	start(t, ctx, c, "")
	other := c.Shim.TaskAPI(t, c.Mode.TaskVersion())
	for i := 0; i < pauseRounds; i++ {
		id := fmt.Sprintf("x%d", i)
		addExec(t, ctx, c, id, []string{"true"}, nil)
		done := make(chan error, 1)
		go func() {
			sctx, cancel := context.WithTimeout(ctx, hangBound)
			defer cancel()
			_, err := other.Start(sctx, &taskv3.StartRequest{ID: c.ID, ExecID: id})
			done <- err
		}()
		if _, err := c.Task().Pause(ctx, &taskv3.PauseRequest{ID: c.ID}); err != nil {
			t.Fatalf("round %d: Pause during an exec's Start: %v (it waits for the launch)", i, err)
		}
		startErr := <-done
		if _, err := c.Task().Resume(ctx, &taskv3.ResumeRequest{ID: c.ID}); err != nil {
			t.Fatalf("round %d: Resume: %v", i, err)
		}
		if startErr != nil {
			expectClass(t, "Start of an exec during a Pause", startErr, "FailedPrecondition")
		} else {
			wait(t, ctx, c, id)
		}
		deleteTask(t, ctx, c, id)
	}
	stop(t, ctx, c)
}
