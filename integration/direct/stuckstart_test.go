package direct

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	taskv3 "github.com/containerd/containerd/api/runtime/task/v3"
	runcopts "github.com/containerd/containerd/api/types/runc/options"
	tasktypes "github.com/containerd/containerd/api/types/task"
)

// slowStartContainer creates a task whose runtime is runc behind a wrapper
// whose start waits for the test's word: a Start that takes long, as with a
// runtime slow to start or a poststart hook that hangs (crun runs those in
// its start; runc, 1.1 and 1.5 alike, in its create). The wrapper
// touches begun when its start begins, and goes on once release exists.
func slowStartContainer(t *testing.T, mode Mode) (c *Container, begun, release string) {
	t.Helper()
	wrapper, begun, release := runcWaitingAt(t, "start")
	env := NewEnv(t)
	c = env.Run(t, Config{Mode: mode, Name: "stuck", Args: loopArgs, NullIO: true,
		Options: runcOptions(t, &runcopts.Options{BinaryName: wrapper})})
	return c, begun, release
}

// runcWaitingAt writes a wrapper of runc whose command (start, pause...)
// waits for the test's word: it touches begun when that command begins, and
// goes on once release exists (made at the test's end at the latest).
func runcWaitingAt(t *testing.T, command string) (wrapper, begun, release string) {
	t.Helper()
	marks := t.TempDir()
	begun, release = filepath.Join(marks, "begun"), filepath.Join(marks, "go")
	wrapper = filepath.Join(marks, "slow-"+command+"-runc")
	script := fmt.Sprintf("#!/bin/sh\nfor a; do if [ \"$a\" = %s ]; then touch %s; while [ ! -e %s ]; do sleep 0.05; done; fi; done\nexec runc \"$@\"\n",
		command, begun, release)
	if err := os.WriteFile(wrapper, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.WriteFile(release, nil, 0o600) })
	return wrapper, begun, release
}

// startInBackground sends the task's Start and waits until the runtime's
// start has begun; the channel gets Start's answer.
func startInBackground(t *testing.T, ctx context.Context, c *Container, begun string) <-chan error {
	t.Helper()
	started := make(chan error, 1)
	go func() {
		_, err := c.Task().Start(ctx, &taskv3.StartRequest{ID: c.ID})
		started <- err
	}()
	until(t, "the runtime's start begins", func() bool {
		_, err := os.Stat(begun)
		return err == nil
	})
	return started
}

func until(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(WaitTimeout); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// A Start held up by the runtime does not hold up Connect, Pids and State
// of the same task: containerd calls Connect and Pids while it loads its
// tasks, and `ctr task ls` calls State. The stock shim's State waits for
// the Start.
func TestRequestsDuringAStuckStart(t *testing.T) {
	t.Parallel()
	forEachAPI(t, func(t *testing.T, mode Mode) {
		c, begun, release := slowStartContainer(t, mode)
		ctx := TestContext(t, time.Minute)
		started := startInBackground(t, ctx, c, begun)

		qctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		defer cancel()
		conn, err := c.Task().Connect(qctx, &taskv3.ConnectRequest{ID: c.ID})
		if err != nil || conn.GetTaskPid() != c.Pid {
			t.Errorf("Connect during the Start: %v, task pid %d, want %d", err, conn.GetTaskPid(), c.Pid)
		}
		pids, err := c.Task().Pids(qctx, &taskv3.PidsRequest{ID: c.ID})
		if err != nil || !slices.ContainsFunc(pids.GetProcesses(), func(p *tasktypes.ProcessInfo) bool { return p.GetPid() == c.Pid }) {
			t.Errorf("Pids during the Start: %v, %v; want the init %d among them", err, pids.GetProcesses(), c.Pid)
		}
		st, err := c.Task().State(qctx, &taskv3.StateRequest{ID: c.ID})
		if err != nil || st.GetPid() != c.Pid {
			t.Errorf("State during the Start: %v, pid %d, want %d", err, st.GetPid(), c.Pid)
		}
		select {
		case err := <-started:
			t.Fatalf("Start returned before the runtime's start: %v", err)
		default:
		}

		if err := os.WriteFile(release, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := <-started; err != nil {
			t.Fatalf("Start: %v", err)
		}
		expectStatus(t, ctx, c, "", tasktypes.Status_RUNNING)
		stop(t, ctx, c)
	})
}

// A Kill sent while the runtime's start hangs is carried out at once, not
// after the Start: it is how a client ends a start that does not return.
// The exit is reported once the Start has returned.
func TestKillDuringAStuckStart(t *testing.T) {
	t.Parallel()
	forEachAPI(t, func(t *testing.T, mode Mode) {
		c, begun, release := slowStartContainer(t, mode)
		ctx := TestContext(t, time.Minute)
		started := startInBackground(t, ctx, c, begun)

		kctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		defer cancel()
		if _, err := c.Task().Kill(kctx, &taskv3.KillRequest{ID: c.ID, Signal: 9}); err != nil {
			t.Fatalf("Kill during the Start: %v", err)
		}
		until(t, "the init's death", func() bool {
			b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", c.Pid))
			return err != nil || strings.Contains(string(b), ") Z ")
		})
		if err := os.WriteFile(release, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		t.Logf("Start after the kill: %v", <-started)
		if got := wait(t, ctx, c, "").GetExitStatus(); got != 137 {
			t.Errorf("Wait: exit status %d, want 137", got)
		}
		deleteTask(t, ctx, c, "")
	})
}
