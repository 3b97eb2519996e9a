package integration

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	apievents "github.com/containerd/containerd/api/events"
	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/errdefs"

	"github.com/example/containerd-shim-example-v2/integration/harness"
)

// crashCleanupTimeout bounds how long containerd may take to notice the dead shim, run the
// shim's `delete` for each of its tasks and publish the exits.
const crashCleanupTimeout = 20 * time.Second

// Reliability 2: the shim daemon is SIGKILLed (its PID read from shim.pid) while it serves a
// group of two containers: cr-run is running (with an exec), cr-done has already exited
// with 5 and was not deleted yet. containerd's cleanup (the shim's `delete` subcommand per
// task) must leave no container process, mount, runc state, socket or bundle; containerd
// must report an exit for both tasks: the pending Wait of cr-run returns and /tasks/exit
// is published with 137; for cr-done the republished /tasks/exit (and /tasks/delete)
// carries the real status 5, not 137. The containers can run again afterwards.
func TestShimKilled(t *testing.T) {
	forEachFlavor(t, func(t *testing.T, d *harness.Daemon) {
		ctx, ns := d.NewNamespace(t)
		ctx, cancel := context.WithTimeout(ctx, 90*time.Second)
		defer cancel()
		group := "crash-" + harness.RandID(8)
		events := subscribeTaskEvents(t, ctx, d, ns)

		run := newContainer(t, ctx, d, "cr-run", loopArgs, groupAnnotation(group))
		runTask, runWait := startTask(t, ctx, run, cio.NullIO)
		done := newContainer(t, ctx, d, "cr-done", []string{"sh", "-c", "exit 5"}, groupAnnotation(group))
		doneTask, doneWait := startTask(t, ctx, done, cio.NullIO)
		if code := exitCode(t, ctx, doneWait); code != 5 {
			t.Fatalf("cr-done: exit code %d before the crash, want 5", code)
		}
		events.collect(t, 10*time.Second, "/tasks/exit of cr-done", func(e taskEvent) bool {
			x, ok := e.Event.(*apievents.TaskExit)
			return ok && x.ContainerID == "cr-done"
		})
		if data, err := os.ReadFile(filepath.Join(d.BundleDir(ns, "cr-done"), "init.exit")); err == nil {
			t.Logf("cr-done's exit record before the crash: %s", strings.TrimSpace(string(data)))
		}

		// An exec in cr-run: it must go too.
		execProc, err := runTask.Exec(ctx, "sleeper", execSpec(t, ctx, runTask, "sleep", "100000"), cio.NullIO)
		if err != nil {
			t.Fatalf("exec: %v", err)
		}
		if err := execProc.Start(ctx); err != nil {
			t.Fatalf("exec start: %v", err)
		}
		initPid, execPid := int(runTask.Pid()), int(execProc.Pid())

		shimPid := shimPidFor(t, d, ns, "cr-run", "cr-run")
		if p2 := shimPidFor(t, d, ns, "cr-done", "cr-run"); p2 != shimPid {
			t.Fatalf("cr-run and cr-done (one group) are served by shims %d and %d", shimPid, p2)
		}
		socket := socketOf(t, readAddressFile(t, d, ns, "cr-run"))
		t.Cleanup(func() { removeDeadSocket(socket) })

		// A Wait pending on the running task while the shim dies.
		t.Logf("SIGKILL to shim %d (cr-run init %d, exec %d)", shimPid, initPid, execPid)
		killed := time.Now()
		if err := syscall.Kill(shimPid, syscall.SIGKILL); err != nil {
			t.Fatalf("kill shim %d: %v", shimPid, err)
		}

		select {
		case st := <-runWait:
			code, _, err := st.Result()
			t.Logf("pending Wait of cr-run after the shim died: code %d err %v (after %v)", code, err, time.Since(killed).Round(time.Millisecond))
			if err == nil && code != 137 {
				t.Errorf("pending Wait of cr-run: exit code %d, want 137 (killed by containerd's cleanup)", code)
			}
		case <-time.After(crashCleanupTimeout):
			t.Errorf("pending Wait of cr-run did not return within %v of the shim's death", crashCleanupTimeout)
		}

		// containerd republishes an exit and a delete for each task of the dead shim.
		want := map[string]uint32{"cr-run": 137, "cr-done": 5}
		exitsSeen, deletesSeen := map[string][]uint32{}, map[string][]uint32{}
		events.collect(t, crashCleanupTimeout, "/tasks/exit and /tasks/delete of both tasks after the crash", func(e taskEvent) bool {
			switch x := e.Event.(type) {
			case *apievents.TaskExit:
				exitsSeen[x.ContainerID] = append(exitsSeen[x.ContainerID], x.ExitStatus)
			case *apievents.TaskDelete:
				deletesSeen[x.ContainerID] = append(deletesSeen[x.ContainerID], x.ExitStatus)
			}
			return len(exitsSeen["cr-run"]) > 0 && len(exitsSeen["cr-done"]) > 0 && len(deletesSeen["cr-run"]) > 0 && len(deletesSeen["cr-done"]) > 0
		})
		t.Logf("after the crash: /tasks/exit %v, /tasks/delete %v", exitsSeen, deletesSeen)
		for id, code := range want {
			for _, got := range exitsSeen[id] {
				if got != code {
					t.Errorf("%s: /tasks/exit after the shim's death has status %d, want %d", id, got, code)
				}
			}
			for _, got := range deletesSeen[id] {
				if got != code {
					t.Errorf("%s: /tasks/delete after the shim's death has status %d, want %d", id, got, code)
				}
			}
		}

		// containerd forgot both tasks; the Delete a client would still try finds nothing.
		for _, tk := range []containerd.Task{runTask, doneTask} {
			_, err := tk.Delete(ctx)
			if err == nil {
				t.Errorf("%s: Delete after the shim's death succeeded; containerd's cleanup should have removed the task", tk.ID())
			} else if !errdefs.IsNotFound(err) {
				t.Logf("%s: Delete after the shim's death: %v", tk.ID(), err)
			}
		}

		// Nothing left: processes, shim, mounts, runc state, bundles, socket.
		waitFor(t, 10*time.Second, "container processes gone after the shim's death", func() bool {
			return !harness.PidExists(initPid) && !harness.PidExists(execPid)
		})
		if harness.PidExists(shimPid) {
			t.Errorf("shim %d still alive after SIGKILL", shimPid)
		}
		expectNoLeftovers(t, d, ns, "cr-run")
		expectNoLeftovers(t, d, ns, "cr-done")
		if !eventually(5*time.Second, func() bool {
			_, err := os.Lstat(socket)
			return os.IsNotExist(err)
		}) {
			t.Errorf("socket %s of the dead shim left behind after containerd's cleanup", socket)
		}

		// And the containers run again (a fresh shim, clean runtime state).
		again, againWait := startTask(t, ctx, done, cio.NullIO)
		if code := exitCode(t, ctx, againWait); code != 5 {
			t.Errorf("cr-done run again: exit code %d, want 5", code)
		}
		if _, err := again.Delete(ctx); err != nil {
			t.Errorf("delete cr-done's second task: %v", err)
		}
		rerun, _ := startTask(t, ctx, run, cio.NullIO)
		expectRunning(t, ctx, rerun, "after a restart following the crash")
	})
}

// removeDeadSocket removes a shim socket file nobody answers on any more (what a killed
// shim leaves when its cleanup does not remove it), after the test has reported it.
func removeDeadSocket(path string) {
	if st, err := os.Lstat(path); err != nil || st.Mode().Type() != os.ModeSocket {
		return // not a socket: nobody's stale socket, and not the test's to remove
	}
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return
	}
	os.Remove(path)
}
