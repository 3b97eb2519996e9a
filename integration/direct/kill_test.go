package direct

import (
	"testing"
	"time"

	taskv3 "github.com/containerd/containerd/api/runtime/task/v3"
)

// Kill: SIGKILL gives 137 (128 + 9); SIGTERM reaches a shell that traps it
// (it runs as the container's PID 1, which only gets signals it handles);
// a signal to a process that has exited is NotFound.
func TestKill(t *testing.T) {
	t.Parallel()
	t.Run("sigkill", func(t *testing.T) {
		t.Parallel()
		env := NewEnv(t)
		c := env.Run(t, Config{Mode: Bootstrap, Name: "kill9", Args: loopArgs, NullIO: true})
		ctx := TestContext(t, time.Minute)
		start(t, ctx, c, "")
		kill(t, ctx, c, "", 0) // kill(2)'s probe: delivers nothing
		if st, err := c.Task().State(ctx, &taskv3.StateRequest{ID: c.ID}); err != nil || st.GetStatus().String() != "RUNNING" {
			t.Errorf("after signal 0: state %v, %v; want RUNNING", st.GetStatus(), err)
		}
		kill(t, ctx, c, "", sigKILL)
		if got := wait(t, ctx, c, "").GetExitStatus(); got != 137 {
			t.Errorf("exit status after SIGKILL %d, want 137", got)
		}
		if x := exitEvent(t, c, c.ID); x.GetExitStatus() != 137 {
			t.Errorf("/tasks/exit status %d, want 137", x.GetExitStatus())
		}
		_, err := c.Task().Kill(ctx, &taskv3.KillRequest{ID: c.ID, Signal: sigKILL, All: true})
		expectClass(t, "Kill of an exited init", err, "NotFound")
		_, err = c.Task().Kill(ctx, &taskv3.KillRequest{ID: c.ID, Signal: 0})
		expectClass(t, "signal 0 to an exited init", err, "NotFound")
		_, err = c.Task().Kill(ctx, &taskv3.KillRequest{ID: c.ID, Signal: 65})
		expectClass(t, "signal 65", err, "InvalidArgument")
		deleteTask(t, ctx, c, "")
	})
	t.Run("sigterm-trapped", func(t *testing.T) {
		t.Parallel()
		env := NewEnv(t)
		script := `trap 'echo got-term; exit 7' TERM; echo ready; while :; do sleep 0.05; done`
		c := env.Run(t, Config{Mode: Bootstrap, Name: "term", Args: []string{"sh", "-c", script}})
		ctx := TestContext(t, time.Minute)
		start(t, ctx, c, "")
		c.IO.WaitStdout(t, "ready\n", WaitTimeout) // the trap is set
		kill(t, ctx, c, "", sigTERM)
		if got := wait(t, ctx, c, "").GetExitStatus(); got != 7 {
			t.Errorf("exit status after a trapped SIGTERM %d, want 7 (the trap's)", got)
		}
		if stdout, _ := c.IO.Output(t, WaitTimeout); stdout != "ready\ngot-term\n" {
			t.Errorf("stdout %q, want %q", stdout, "ready\ngot-term\n")
		}
		deleteTask(t, ctx, c, "")
	})
	t.Run("exec", func(t *testing.T) {
		t.Parallel()
		env := NewEnv(t)
		c := env.Run(t, Config{Mode: Bootstrap, Name: "killx", Args: loopArgs, NullIO: true})
		ctx := TestContext(t, time.Minute)
		start(t, ctx, c, "")
		addExec(t, ctx, c, "x", loopArgs, nil)
		start(t, ctx, c, "x")
		kill(t, ctx, c, "x", sigKILL)
		if got := wait(t, ctx, c, "x").GetExitStatus(); got != 137 {
			t.Errorf("exec exit status after SIGKILL %d, want 137", got)
		}
		_, err := c.Task().Kill(ctx, &taskv3.KillRequest{ID: c.ID, ExecID: "x", Signal: sigKILL})
		expectClass(t, "Kill of an exited exec", err, "NotFound")
		deleteTask(t, ctx, c, "x")
		stop(t, ctx, c)
	})
}
