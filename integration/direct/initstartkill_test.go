package direct

import (
	"fmt"
	"math/rand"
	"testing"
	"time"

	taskv3 "github.com/containerd/containerd/api/runtime/task/v3"
)

// killStartRounds is how many containers TestInitStartRacingKill starts
// while a Kill lands: the Kill meets the runtime's start in some rounds,
// not all.
const killStartRounds = 16

// A container's Start that meets a Kill of its init (kubelet stopping a
// container CRI is starting, containerd's WithProcessKill on a task being
// started) fails as the runtime refuses to start a container whose init is
// gone ("cannot start a container that has stopped", or runc's "already
// running" while the killed init is in its exit). That refusal is a state
// the caller raced, FailedPrecondition, as an exec's Start meeting the
// init's death is (TestRequestsRacingInitExit): not the runtime's bare error
// with no class (Unknown). The init's Wait answers 137 either way.
func TestInitStartRacingKill(t *testing.T) {
	t.Parallel()
	env := NewEnv(t)
	c := env.Run(t, Config{Mode: Bootstrap, Name: "ksi", Args: loopArgs, NullIO: true})
	ctx := TestContext(t, 3*time.Minute)
	start(t, ctx, c, "")
	other := c.Shim.TaskAPI(t, c.Mode.TaskVersion())
	raced := 0
	for i := 0; i < killStartRounds; i++ {
		late := lateTask(t, env, c, fmt.Sprintf("ksi%d", i), "", loopArgs)
		id := late.ID
		if _, err := c.Task().Create(ctx, late.CreateRequest()); err != nil {
			t.Fatalf("Create %s: %v", id, err)
		}
		done := make(chan error, 1)
		go func() {
			_, err := other.Start(ctx, &taskv3.StartRequest{ID: id})
			done <- err
		}()
		time.Sleep(time.Duration(rand.Intn(4000)) * time.Microsecond)
		if _, err := c.Task().Kill(ctx, &taskv3.KillRequest{ID: id, Signal: sigKILL}); err != nil {
			t.Errorf("Kill %s: %v", id, err)
		}
		if err := <-done; err != nil {
			raced++
			if ErrClass(err) != "FailedPrecondition" {
				t.Errorf("Start of %s as its init is killed: %v (class %s), want FailedPrecondition", id, err, ErrClass(err))
			}
		}
		w, err := c.Task().Wait(ctx, &taskv3.WaitRequest{ID: id})
		if err != nil || w.GetExitStatus() != 137 {
			t.Errorf("Wait %s: %v %v, want 137", id, w.GetExitStatus(), err)
		}
		if _, err := c.Task().Delete(ctx, &taskv3.DeleteRequest{ID: id}); err != nil {
			t.Errorf("Delete %s: %v", id, err)
		}
	}
	t.Logf("%d of %d Starts met the Kill", raced, killStartRounds)
	stop(t, ctx, c)
}
