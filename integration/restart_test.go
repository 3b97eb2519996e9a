package integration

import (
	"context"
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

// restartDown is how long containerd stays stopped after the exits were made: long enough
// for the shim's retries to back off, short enough for the stock shim's retry window (~20 s).
const restartDown = 3 * time.Second

// Reliability 3: containerd is stopped (SIGTERM to its PID) and started again with the same
// config, root, state and sockets while containers run. The shims survive (they are not in
// containerd's process group), the containers keep running, and containerd reconnects:
// `ctr task ls` lists them RUNNING with the same PIDs, Pids and exec work. Exits that happen
// while containerd is down (the test SIGKILLs an init and an exec directly) are delivered
// once containerd is back: their /tasks/exit is forwarded to containerd after the restart
// (seen by a subscriber started after the restart when it is quick enough, and always in
// containerd's log of forwarded events), and Wait/Delete report 137. Each flavor gets a
// daemon of its own (a restart must not disturb the shared daemons).
func TestContainerdRestart(t *testing.T) {
	for _, flavor := range harness.AllFlavors {
		t.Run("containerd-"+flavor, func(t *testing.T) {
			d := harness.StartDaemon(t, flavor)
			ctx, ns := d.NewNamespace(t)
			restartForCleanup(t, d)
			ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
			defer cancel()

			// rs-run runs throughout; rs-exec runs with an exec ("victim") that dies while
			// containerd is down; rs-init's init dies while containerd is down.
			for _, id := range []string{"rs-run", "rs-exec", "rs-init"} {
				c := newContainer(t, ctx, d, id, loopArgs)
				startTask(t, ctx, c, cio.NullIO)
			}
			execTask := loadTask(t, ctx, d, "rs-exec")
			victim, err := execTask.Exec(ctx, "victim", execSpec(t, ctx, execTask, "sleep", "100000"), cio.NullIO)
			if err != nil {
				t.Fatalf("exec: %v", err)
			}
			if err := victim.Start(ctx); err != nil {
				t.Fatalf("exec start: %v", err)
			}
			victimPid := int(victim.Pid())
			before := ctrTaskList(t, ctx, d)
			shimsBefore := d.ShimProcesses(ns, "")
			if len(shimsBefore) != 3 {
				t.Fatalf("shim processes %v, want 3 (one per container)", shimsBefore)
			}
			for _, s := range shimsBefore {
				if pgid, err := syscall.Getpgid(s.Pid); err != nil || pgid == d.Pid() {
					t.Errorf("shim %d: process group %d (err %v) is containerd's: it would share containerd's fate", s.Pid, pgid, err)
				}
			}

			oldPid := d.Pid()
			if err := d.StopProcess(); err != nil {
				t.Fatalf("stop containerd: %v", err)
			}
			t.Logf("containerd %d stopped", oldPid)
			for _, s := range shimsBefore {
				if !harness.PidExists(s.Pid) {
					t.Fatalf("shim %s died with containerd", s)
				}
			}
			for id, row := range before {
				if !harness.PidExists(row.Pid) {
					t.Fatalf("%s: pid %d died with containerd", id, row.Pid)
				}
			}

			// Exits while containerd is down.
			initPid := before["rs-init"].Pid
			for _, pid := range []int{initPid, victimPid} {
				if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
					t.Fatalf("kill %d: %v", pid, err)
				}
			}
			waitFor(t, 10*time.Second, "killed processes reaped by their shims", func() bool {
				return !harness.PidExists(initPid) && !harness.PidExists(victimPid)
			})
			if harness.Runtime() == harness.DefaultRuntime {
				exitFile := filepath.Join(d.BundleDir(ns, "rs-init"), "init.exit")
				waitFor(t, 5*time.Second, "rs-init's exit recorded in "+exitFile, func() bool {
					_, err := os.Stat(exitFile)
					return err == nil
				})
			}
			time.Sleep(restartDown)

			// containerd 1.6 logs each event a shim forwards at debug level, 2.x only at trace:
			// the restarted daemon logs at trace, so its log proves the delivery whatever the
			// race between the shim's retry and the test's new subscription.
			if err := d.SetLogLevel("trace"); err != nil {
				t.Fatal(err)
			}
			logOffset := d.LogSize()
			if err := d.StartProcess(); err != nil {
				t.Fatalf("start containerd again: %v", err)
			}
			t.Logf("containerd restarted as %d", d.Pid())
			rec := recordTaskEvents(t, ctx, d, ns)

			// The exits made while containerd was down reach containerd.
			exitsOf := func(evs []taskEvent) map[string]uint32 {
				seen := map[string]uint32{}
				for _, e := range evs {
					if x, ok := e.Event.(*apievents.TaskExit); ok {
						seen[x.ContainerID+"/"+x.ID] = x.ExitStatus
					}
				}
				return seen
			}
			rec.waitFor(10*time.Second, func(evs []taskEvent) bool { return len(exitsOf(evs)) >= 2 })
			var forwarded int
			eventually(10*time.Second, func() bool {
				forwarded = forwardedExits(d.LogSince(logOffset, 16<<20), ns)
				return forwarded >= 2
			})
			seen := exitsOf(rec.all())
			t.Logf("after the restart: containerd logged %d forwarded /tasks/exit in %s; the new subscriber saw %v", forwarded, ns, seen)
			if forwarded < 2 {
				t.Errorf("exits made while containerd was down: %d /tasks/exit forwarded to containerd after the restart (subscriber saw %v), want 2 (rs-init and exec victim)", forwarded, seen)
			}
			for k, code := range seen {
				if code != 137 {
					t.Errorf("/tasks/exit %s after the restart: status %d, want 137", k, code)
				}
			}

			// The survivors are reconnected, unchanged.
			after := ctrTaskList(t, ctx, d)
			for _, id := range []string{"rs-run", "rs-exec"} {
				if after[id].Status != "RUNNING" || after[id].Pid != before[id].Pid {
					t.Errorf("%s after the restart: %+v, want RUNNING with pid %d", id, after[id], before[id].Pid)
				}
			}
			t.Logf("ctr task ls after the restart: %v", after)
			run := loadTask(t, ctx, d, "rs-run")
			pids, err := run.Pids(ctx)
			if err != nil {
				t.Errorf("Pids of rs-run after the restart: %v", err)
			} else if !pidListed(pids, before["rs-run"].Pid) {
				t.Errorf("Pids of rs-run after the restart: %v, want it to hold %d", pids, before["rs-run"].Pid)
			}
			if code := runExec(t, ctx, run, "after-restart", "sh", "-c", "exit 3"); code != 3 {
				t.Errorf("exec in rs-run after the restart: exit code %d, want 3", code)
			}
			for _, s := range shimsBefore {
				if !harness.PidExists(s.Pid) && !(d.Is2x() && strings.Contains(s.String(), " -id rs-init ")) {
					t.Errorf("shim %s gone after the restart", s)
				}
			}

			// The exec that died while containerd was down: Wait and Delete report 137.
			execTask = loadTask(t, ctx, d, "rs-exec")
			proc, err := execTask.LoadProcess(ctx, "victim", nil)
			if err != nil {
				t.Errorf("load exec victim after the restart: %v", err)
			} else {
				checkRestartExit(t, ctx, "exec victim", proc)
			}
			expectRunning(t, ctx, execTask, "after its exec died while containerd was down")

			// The init that died while containerd was down.
			c, err := d.Client().LoadContainer(ctx, "rs-init")
			if err != nil {
				t.Fatalf("load rs-init: %v", err)
			}
			initTask, err := c.Task(ctx, nil)
			switch {
			case err == nil:
				checkRestartExit(t, ctx, "rs-init", initTask)
			case errdefs.IsNotFound(err) && d.Is2x():
				// containerd 2.x drops, at reload, a task whose Pids list is empty (it takes it
				// for a shim whose Create never happened, containerd#6860), so only the event
				// reports this exit.
				t.Logf("rs-init: task dropped by containerd 2.x at reload (empty Pids); exit known from the event only")
			default:
				t.Errorf("rs-init after the restart: %v", err)
			}
			if row, ok := ctrTaskList(t, ctx, d)["rs-init"]; ok && row.Status == "RUNNING" {
				t.Errorf("rs-init listed RUNNING after its init was killed")
			}
		})
	}
}

// waitDeleter is a task or process: Wait then Delete.
type waitDeleter interface {
	Wait(context.Context) (<-chan containerd.ExitStatus, error)
	Delete(context.Context, ...containerd.ProcessDeleteOpts) (*containerd.ExitStatus, error)
}

// checkRestartExit expects Wait and Delete of a process killed by SIGKILL to report 137.
func checkRestartExit(t *testing.T, ctx context.Context, what string, p waitDeleter) {
	t.Helper()
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	statusC, err := p.Wait(wctx)
	if err != nil {
		t.Errorf("%s: Wait after the restart: %v", what, err)
		return
	}
	select {
	case st := <-statusC:
		code, _, err := st.Result()
		if err != nil || code != 137 {
			t.Errorf("%s: Wait after the restart: code %d err %v, want 137", what, code, err)
		}
	case <-wctx.Done():
		t.Errorf("%s: Wait after the restart did not return: its exit while containerd was down is lost", what)
		return
	}
	st, err := p.Delete(ctx)
	if err != nil {
		t.Errorf("%s: Delete after the restart: %v", what, err)
	} else if st.ExitCode() != 137 {
		t.Errorf("%s: Delete after the restart: exit code %d, want 137", what, st.ExitCode())
	}
}

// loadTask loads the task of container id through the daemon's current client.
func loadTask(t *testing.T, ctx context.Context, d *harness.Daemon, id string) containerd.Task {
	t.Helper()
	c, err := d.Client().LoadContainer(ctx, id)
	if err != nil {
		t.Fatalf("load container %s: %v", id, err)
	}
	task, err := c.Task(ctx, nil)
	if err != nil {
		t.Fatalf("load task %s: %v", id, err)
	}
	return task
}

func pidListed(pids []containerd.ProcessInfo, pid int) bool {
	for _, p := range pids {
		if int(p.Pid) == pid {
			return true
		}
	}
	return false
}

// forwardedExits counts the /tasks/exit events of namespace ns that containerd's log says
// a shim forwarded (containerd logs each forwarded event at debug level).
func forwardedExits(log, ns string) int {
	n := 0
	for _, line := range strings.Split(log, "\n") {
		if strings.Contains(line, `msg="event forwarded"`) && strings.Contains(line, "ns="+ns+" ") && strings.Contains(line, "topic=/tasks/exit ") {
			n++
		}
	}
	return n
}

// restartForCleanup registers, after the namespace's cleanup (so it runs first), a restart of
// containerd if a test failed while it was stopped: the namespace's cleanup removes the tasks
// through it.
func restartForCleanup(t *testing.T, d *harness.Daemon) {
	t.Helper()
	t.Cleanup(func() {
		if d.Exited() {
			if err := d.StartProcess(); err != nil {
				t.Errorf("restart containerd for cleanup: %v", err)
			}
		}
	})
}
