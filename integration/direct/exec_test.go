package direct

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	taskv3 "github.com/containerd/containerd/api/runtime/task/v3"
	tasktypes "github.com/containerd/containerd/api/types/task"
)

// Execs in a running container: exit codes and output, a shell's command
// not found (127), a missing binary (Start fails, its Wait answers 255, the
// container lives on),
// and an exited exec's output read only after its exit, drained in full.
func TestExec(t *testing.T) {
	t.Parallel()
	forEachAPI(t, func(t *testing.T, mode Mode) {
		env := NewEnv(t)
		c := env.Run(t, Config{Mode: mode, Name: "exec", Args: loopArgs, NullIO: true})
		ctx := TestContext(t, time.Minute)
		start(t, ctx, c, "")

		t.Run("exit-and-output", func(t *testing.T) {
			pio := NewStdio(t, StdioConfig{})
			addExec(t, ctx, c, "out", []string{"sh", "-c", "echo out; echo err >&2; exit 5"}, pio)
			expectStatus(t, ctx, c, "out", tasktypes.Status_CREATED)
			pid := start(t, ctx, c, "out")
			if pid == c.Pid {
				t.Errorf("exec pid %d is the init's", pid)
			}
			if got := wait(t, ctx, c, "out").GetExitStatus(); got != 5 {
				t.Errorf("exec: exit status %d, want 5", got)
			}
			stdout, stderr := pio.Output(t, WaitTimeout)
			if stdout != "out\n" || stderr != "err\n" {
				t.Errorf("exec output %q / %q, want %q / %q", stdout, stderr, "out\n", "err\n")
			}
			st := expectStatus(t, ctx, c, "out", tasktypes.Status_STOPPED)
			if st.GetExitStatus() != 5 || st.GetPid() != pid {
				t.Errorf("exec State: exit %d pid %d, want 5 %d", st.GetExitStatus(), st.GetPid(), pid)
			}
			if x := exitEvent(t, c, "out"); x.GetExitStatus() != 5 || x.GetPid() != pid || x.GetContainerID() != c.ID {
				t.Errorf("/tasks/exit of the exec: %v, want status 5 pid %d container %s", x, pid, c.ID)
			}
			if d := deleteTask(t, ctx, c, "out"); d.GetExitStatus() != 5 || d.GetPid() != pid {
				t.Errorf("exec Delete: status %d pid %d, want 5 %d", d.GetExitStatus(), d.GetPid(), pid)
			}
			_, err := c.Task().Delete(ctx, &taskv3.DeleteRequest{ID: c.ID, ExecID: "out"})
			expectClass(t, "second Delete of the exec", err, "NotFound")
			_, err = c.Task().State(ctx, &taskv3.StateRequest{ID: c.ID, ExecID: "out"})
			expectClass(t, "State of the deleted exec", err, "NotFound")
		})

		t.Run("command-not-found", func(t *testing.T) {
			pio := NewStdio(t, StdioConfig{})
			addExec(t, ctx, c, "nocmd", []string{"sh", "-c", "no-such-command"}, pio)
			start(t, ctx, c, "nocmd")
			if got := wait(t, ctx, c, "nocmd").GetExitStatus(); got != 127 {
				t.Errorf("exec of an unknown command: exit status %d, want 127", got)
			}
			if _, stderr := pio.Output(t, WaitTimeout); !strings.Contains(stderr, "not found") {
				t.Errorf("stderr %q does not say the command was not found", stderr)
			}
			deleteTask(t, ctx, c, "nocmd")
		})

		t.Run("missing-binary", func(t *testing.T) {
			addExec(t, ctx, c, "missing", []string{"/no/such/binary"}, nil)
			// Waited on before its Start, as containerd's client does: the
			// Wait is answered once the Start has failed, not at the Delete.
			waited := make(chan *taskv3.WaitResponse, 1)
			go func() {
				resp, err := c.Task().Wait(ctx, &taskv3.WaitRequest{ID: c.ID, ExecID: "missing"})
				if err != nil {
					t.Errorf("Wait on the exec: %v", err)
				}
				waited <- resp
			}()
			time.Sleep(100 * time.Millisecond) // the Wait is parked before the Start
			_, err := c.Task().Start(ctx, &taskv3.StartRequest{ID: c.ID, ExecID: "missing"})
			if err == nil {
				t.Errorf("Start of an exec of a missing binary succeeded")
			} else if !strings.Contains(strings.ToLower(err.Error()), "no such file") {
				t.Errorf("Start error %q does not name the missing file", err)
			}
			select {
			case resp := <-waited:
				if resp.GetExitStatus() != 255 {
					t.Errorf("Wait on the exec that never started: exit status %d, want 255", resp.GetExitStatus())
				}
			case <-time.After(10 * time.Second):
				t.Errorf("Wait on the exec was not answered after its Start failed")
			}
			if st := expectStatus(t, ctx, c, "missing", tasktypes.Status_STOPPED); st.GetExitStatus() != 255 {
				t.Errorf("State of the exec that never started: exit status %d, want 255", st.GetExitStatus())
			}
			_, err = c.Task().Start(ctx, &taskv3.StartRequest{ID: c.ID, ExecID: "missing"})
			expectClass(t, "second Start of the failed exec", err, "FailedPrecondition")
			if d := deleteTask(t, ctx, c, "missing"); d.GetExitStatus() != 255 {
				t.Errorf("Delete of the failed exec: exit status %d, want 255", d.GetExitStatus())
			}
			expectStatus(t, ctx, c, "", tasktypes.Status_RUNNING)
		})

		t.Run("drained-after-exit", func(t *testing.T) {
			// About 95 KB: more than a FIFO holds, so part of it waits in the
			// shim when the exec has already exited.
			const lines = 18000
			pio := NewStdio(t, StdioConfig{Deferred: true})
			addExec(t, ctx, c, "drain", []string{"seq", "1", "18000"}, pio)
			start(t, ctx, c, "drain")
			if got := wait(t, ctx, c, "drain").GetExitStatus(); got != 0 {
				t.Errorf("seq: exit status %d, want 0", got)
			}
			pio.StartReading()
			stdout, _ := pio.Output(t, WaitTimeout)
			sameText(t, "output of an exited exec", stdout, seqOutput(lines))
			deleteTask(t, ctx, c, "drain")
		})

		t.Run("ids-named-like-bundle-files", func(t *testing.T) {
			// The runtime writes an exec's PID into the bundle: exec IDs
			// "init" and "shim" must not overwrite, nor their Delete remove,
			// the init's and the shim's PID files.
			files := map[string][]byte{}
			for _, f := range []string{"init.pid", "shim.pid"} {
				b, err := os.ReadFile(filepath.Join(c.Bundle.Dir, f))
				if err != nil {
					t.Fatal(err)
				}
				files[f] = b
			}
			for _, id := range []string{"init", "shim"} {
				addExec(t, ctx, c, id, []string{"true"}, nil)
				start(t, ctx, c, id)
				wait(t, ctx, c, id)
				deleteTask(t, ctx, c, id)
			}
			for f, want := range files {
				if got, err := os.ReadFile(filepath.Join(c.Bundle.Dir, f)); err != nil || string(got) != string(want) {
					t.Errorf("%s after execs named init and shim: %q (%v), want %q", f, got, err, want)
				}
			}
		})

		expectStatus(t, ctx, c, "", tasktypes.Status_RUNNING)
		stop(t, ctx, c)
	})
}
