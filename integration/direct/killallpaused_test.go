package direct

import (
	"testing"
	"time"

	taskv3 "github.com/containerd/containerd/api/runtime/task/v3"
	tasktypes "github.com/containerd/containerd/api/types/task"
	"golang.org/x/sys/unix"
)

// A signal to every process of a paused container (Kill with all) may leave
// it running: runc's kill --all freezes the cgroup, signals and thaws it;
// crun leaves it frozen. The task's state follows the runtime's: PAUSED only
// while a Resume can resume it, RUNNING (and execs start) once it runs. The
// stock shim kept PAUSED, and the Resume that followed failed "not paused".
func TestKillAllOfAPausedContainerKeepsItsStateTrue(t *testing.T) {
	t.Parallel()
	env := NewEnv(t)
	c := env.Run(t, Config{Mode: Bootstrap, Name: "killallpaused", Args: loopArgs, NullIO: true})
	ctx := TestContext(t, time.Minute)
	start(t, ctx, c, "")
	if _, err := c.Task().Pause(ctx, &taskv3.PauseRequest{ID: c.ID}); err != nil {
		t.Fatalf("Pause: %v", err)
	}
	// SIGWINCH: ignored by sleep, so the container lives on.
	if _, err := c.Task().Kill(ctx, &taskv3.KillRequest{ID: c.ID, Signal: uint32(unix.SIGWINCH), All: true}); err != nil {
		t.Fatalf("Kill(all) of the paused container: %v", err)
	}
	st, err := c.Task().State(ctx, &taskv3.StateRequest{ID: c.ID})
	if err != nil {
		t.Fatal(err)
	}
	switch st.Status {
	case tasktypes.Status_PAUSED:
		if _, err := c.Task().Resume(ctx, &taskv3.ResumeRequest{ID: c.ID}); err != nil {
			t.Fatalf("State says PAUSED after Kill(all), but Resume fails: %v", err)
		}
	case tasktypes.Status_RUNNING:
		addExec(t, ctx, c, "after", []string{"true"}, nil)
		if _, err := c.Task().Start(ctx, &taskv3.StartRequest{ID: c.ID, ExecID: "after"}); err != nil {
			t.Fatalf("State says RUNNING after Kill(all), but an exec does not start: %v", err)
		}
		wait(t, ctx, c, "after")
		deleteTask(t, ctx, c, "after")
	default:
		t.Fatalf("after Kill(all) with SIGWINCH: %v, want PAUSED or RUNNING", st.Status)
	}
	stop(t, ctx, c)
}
