package direct

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	taskv3 "github.com/containerd/containerd/api/runtime/task/v3"
	runcopts "github.com/containerd/containerd/api/types/runc/options"
	tasktypes "github.com/containerd/containerd/api/types/task"
)

// hungSeconds is how long the wedged runtime command sleeps: far beyond any
// deadline of the test (and not a number other tests match host-wide).
const hungSeconds = 3607

// runcHangingFor writes a runc wrapper whose command (pause, kill...) hangs
// when it names a container whose id begins with prefix; every other call
// goes to runc. With fork, the wrapper runs the hanging command as its child
// and waits for it, as a wrapper that logs or post-processes runc's answer
// (`runc "$@"; rc=$?; ...`) does when runc hangs; otherwise it execs it.
func runcHangingFor(t *testing.T, command, prefix string, fork bool) string {
	t.Helper()
	wrapper := filepath.Join(t.TempDir(), "hanging-"+command+"-runc")
	hang := fmt.Sprintf("exec sleep %d", hungSeconds)
	if fork {
		hang = fmt.Sprintf("sleep %d; exit 1", hungSeconds)
	}
	script := fmt.Sprintf("#!/bin/sh\ncase \" $* \" in *\" %s %s\"*) %s;; esac\nexec runc \"$@\"\n", command, prefix, hang)
	if err := os.WriteFile(wrapper, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return wrapper
}

// hungLeft lists the wedged runtime's processes still under the shim.
func hungLeft(shimPid int) []int {
	var out []int
	for _, p := range shimDescendants(shimPid) {
		if a := processArgs(p); slices.Contains(a, fmt.Sprint(hungSeconds)) {
			out = append(out, p)
		}
	}
	return out
}

// prompt runs one request with a short deadline and fails the test when it
// errs or takes long.
func prompt(t *testing.T, ctx context.Context, what string, call func(ctx context.Context) error) {
	t.Helper()
	qctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	begun := time.Now()
	if err := call(qctx); err != nil {
		t.Errorf("%s while another container's runtime hangs: %v (after %v)", what, err, time.Since(begun).Round(time.Millisecond))
	}
}

// One pod's daemon, one container whose runtime wedges on its pause: the
// Pause answers at its deadline, the other containers of the daemon are
// served as usual meanwhile (their requests, their exits and events, a new
// container's Create), the wedged runtime command is killed and reaped once
// its request is abandoned, and the hung container itself is served again
// afterwards (its exit is recorded, its Delete works).
func TestWedgedRuntimeForOneContainer(t *testing.T) {
	t.Parallel()
	for _, fork := range []bool{false, true} {
		name := "exec"
		if fork {
			name = "forking-wrapper"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			testWedgedRuntime(t, fork)
		})
	}
}

func testWedgedRuntime(t *testing.T, fork bool) {
	wrapper := runcHangingFor(t, "pause", "hung-", fork)
	opts := runcOptions(t, &runcopts.Options{BinaryName: wrapper})
	env := NewEnv(t)
	a := env.Run(t, Config{Mode: Bootstrap, Name: "hung", Args: loopArgs, NullIO: true, Options: opts})
	ctx := TestContext(t, 2*time.Minute)
	start(t, ctx, a, "")

	// A second container in the same daemon, on the same connection (as
	// containerd has one per daemon), through the same runtime
	// wrapper (its calls do not hang).

	newTask := func(name string) *Container {
		c := lateTask(t, env, a, name, "", loopArgs)
		c.Options = opts
		if err := c.Create(ctx); err != nil {
			t.Fatalf("Create %s: %v", c.ID, err)
		}
		return c
	}
	b := newTask("other")
	start(t, ctx, b, "")

	// The wedged Pause, with a deadline.
	paused := make(chan error, 1)
	pauseBegun := time.Now()
	go func() {
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		_, err := a.Task().Pause(pctx, &taskv3.PauseRequest{ID: a.ID})
		paused <- err
	}()
	until(t, "the runtime's pause begins", func() bool { return len(hungLeft(a.Shim.Pid)) > 0 })
	hung := hungLeft(a.Shim.Pid)
	t.Cleanup(func() {
		// A leaked one outlives the shim: it is this test's to end.
		for _, p := range hung {
			if slices.Contains(processArgs(p), fmt.Sprint(hungSeconds)) {
				_ = syscall.Kill(p, syscall.SIGKILL)
			}
		}
	})

	// The other container, meanwhile.
	prompt(t, ctx, "State", func(ctx context.Context) error {
		st, err := b.Task().State(ctx, &taskv3.StateRequest{ID: b.ID})
		if err == nil && st.GetStatus() != tasktypes.Status_RUNNING {
			err = fmt.Errorf("status %v", st.GetStatus())
		}
		return err
	})
	prompt(t, ctx, "Connect", func(ctx context.Context) error {
		_, err := b.Task().Connect(ctx, &taskv3.ConnectRequest{ID: b.ID})
		return err
	})
	prompt(t, ctx, "Pids", func(ctx context.Context) error {
		_, err := b.Task().Pids(ctx, &taskv3.PidsRequest{ID: b.ID})
		return err
	})
	prompt(t, ctx, "Stats", func(ctx context.Context) error {
		_, err := b.Task().Stats(ctx, &taskv3.StatsRequest{ID: b.ID})
		return err
	})
	prompt(t, ctx, "Exec", func(ctx context.Context) error {
		_, err := b.Task().Exec(ctx, b.ExecRequest(t, "e1", []string{"true"}, nil))
		return err
	})
	prompt(t, ctx, "exec Start", func(ctx context.Context) error {
		_, err := b.Task().Start(ctx, &taskv3.StartRequest{ID: b.ID, ExecID: "e1"})
		return err
	})
	prompt(t, ctx, "exec Wait", func(ctx context.Context) error {
		_, err := b.Task().Wait(ctx, &taskv3.WaitRequest{ID: b.ID, ExecID: "e1"})
		return err
	})
	prompt(t, ctx, "exec Delete", func(ctx context.Context) error {
		_, err := b.Task().Delete(ctx, &taskv3.DeleteRequest{ID: b.ID, ExecID: "e1"})
		return err
	})
	prompt(t, ctx, "Shutdown (refused: tasks left)", func(ctx context.Context) error {
		_, err := b.Task().Shutdown(ctx, &taskv3.ShutdownRequest{ID: b.ID})
		return err
	})
	c := newTask("third")
	prompt(t, ctx, "Start of a new container", func(ctx context.Context) error {
		_, err := c.Task().Start(ctx, &taskv3.StartRequest{ID: c.ID})
		return err
	})
	for _, x := range []*Container{b, c} {
		prompt(t, ctx, "Kill", func(ctx context.Context) error {
			_, err := x.Task().Kill(ctx, &taskv3.KillRequest{ID: x.ID, Signal: sigKILL})
			return err
		})
		prompt(t, ctx, "Wait", func(ctx context.Context) error {
			_, err := x.Task().Wait(ctx, &taskv3.WaitRequest{ID: x.ID})
			return err
		})
		exitEvent(t, x, x.ID)
		prompt(t, ctx, "Delete", func(ctx context.Context) error {
			_, err := x.Task().Delete(ctx, &taskv3.DeleteRequest{ID: x.ID})
			return err
		})
	}

	// The wedged container's own Pause answers at its deadline.
	select {
	case err := <-paused:
		t.Logf("Pause after %v: %v", time.Since(pauseBegun).Round(time.Millisecond), err)
		if err == nil {
			t.Error("Pause succeeded though its runtime hung")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the Pause with a 1 s deadline has not answered")
	}

	// The abandoned runtime command is killed and reaped: nothing of it
	// stays under the shim.
	deadline := time.Now().Add(5 * time.Second)
	for len(hungLeft(a.Shim.Pid)) > 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if left := hungLeft(a.Shim.Pid); len(left) > 0 {
		t.Errorf("%v after the Pause was abandoned, the wedged runtime's processes are still there: %s",
			time.Since(pauseBegun).Round(time.Millisecond), describe(left))
	}

	// The wedged container is served again: its exit is reaped and
	// reported, and it is deleted.
	if err := syscall.Kill(int(a.Pid), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := a.Task().Wait(wctx, &taskv3.WaitRequest{ID: a.ID}); err != nil {
		st, _ := a.Task().State(ctx, &taskv3.StateRequest{ID: a.ID})
		t.Fatalf("Wait for the hung container's init, killed %v after its Pause was abandoned: %v (State %v, its init %d: %q)",
			time.Since(pauseBegun).Round(time.Millisecond), err, st.GetStatus(), a.Pid, strings.Join(processArgs(int(a.Pid)), " "))
	}
	exitEvent(t, a, a.ID)
	deleteTask(t, ctx, a, "")
}
