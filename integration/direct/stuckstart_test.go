package direct

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	taskv3 "github.com/containerd/containerd/api/runtime/task/v3"
	runcopts "github.com/containerd/containerd/api/types/runc/options"
	tasktypes "github.com/containerd/containerd/api/types/task"
)

// A Start that takes long (a runtime slow to start, a poststart hook that
// hangs: runc from 1.2 runs those before its start returns) does not hold
// up Connect, Pids and State of the same task: containerd calls Connect and
// Pids while it loads its tasks, and `ctr task ls` calls State. The stock
// shim's State waits for the Start. The runtime here is runc behind a
// wrapper whose start waits for the test's word.
func TestRequestsDuringAStuckStart(t *testing.T) {
	t.Parallel()
	forEachAPI(t, func(t *testing.T, mode Mode) {
		marks := t.TempDir()
		begun, release := filepath.Join(marks, "begun"), filepath.Join(marks, "go")
		wrapper := filepath.Join(marks, "slow-start-runc")
		script := fmt.Sprintf("#!/bin/sh\nfor a; do if [ \"$a\" = start ]; then touch %s; while [ ! -e %s ]; do sleep 0.05; done; fi; done\nexec runc \"$@\"\n", begun, release)
		if err := os.WriteFile(wrapper, []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = os.WriteFile(release, nil, 0o600) })
		env := NewEnv(t)
		c := env.Run(t, Config{Mode: mode, Name: "stuck", Args: loopArgs, NullIO: true,
			Options: runcOptions(t, &runcopts.Options{BinaryName: wrapper})})
		ctx := TestContext(t, time.Minute)

		started := make(chan error, 1)
		go func() {
			_, err := c.Task().Start(ctx, &taskv3.StartRequest{ID: c.ID})
			started <- err
		}()
		for deadline := time.Now().Add(WaitTimeout); ; time.Sleep(10 * time.Millisecond) {
			if _, err := os.Stat(begun); err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("the poststart hook did not run")
			}
		}

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
			t.Fatalf("Start returned before the hook ended: %v", err)
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
