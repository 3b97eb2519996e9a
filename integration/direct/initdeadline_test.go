package direct

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	taskv3 "github.com/containerd/containerd/api/runtime/task/v3"
	tasktypes "github.com/containerd/containerd/api/types/task"
)

// shimDescendants lists the processes below pid (children, grandchildren).
func shimDescendants(pid int) []int {
	var out []int
	parents := map[int]bool{pid: true}
	for changed := true; changed; {
		changed = false
		for _, p := range allProcesses() {
			if parents[p] {
				continue
			}
			if pp, err := parentPid(p); err == nil && parents[pp] {
				parents[p] = true
				out = append(out, p)
				changed = true
			}
		}
	}
	sort.Ints(out)
	return out
}

func describe(pids []int) string {
	var s []string
	for _, p := range pids {
		s = append(s, fmt.Sprintf("%d %q", p, processArgs(p)))
	}
	return strings.Join(s, "; ")
}

// cgroupProcs lists the processes in cgroup path (any hierarchy).
func cgroupProcs(path string) []string {
	dirs, _ := CgroupDirs(path)
	var out []string
	for _, d := range dirs {
		data, err := os.ReadFile(filepath.Join(d, "cgroup.procs"))
		if err == nil && len(strings.TrimSpace(string(data))) > 0 {
			out = append(out, d+": "+strings.Join(strings.Fields(string(data)), ","))
		}
	}
	return out
}

func fdCount(pid int) int {
	ents, _ := os.ReadDir("/proc/" + strconv.Itoa(pid) + "/fd")
	return len(ents)
}

// leftovers is what a container id that has no task in the shim left on
// the host.
func leftovers(c *Container, id, bundle, cgroup string) []string {
	var out []string
	d := shimDescendants(c.Shim.Pid)
	if id != c.ID { // the daemon's own task's init is not id's
		d = slices.DeleteFunc(d, func(p int) bool { return p == int(c.Pid) })
	}
	if len(d) > 0 {
		out = append(out, "processes under the shim: "+describe(d))
	}
	if p := cgroupProcs(cgroup); len(p) > 0 {
		out = append(out, fmt.Sprintf("processes in the cgroup: %v", p))
	}
	if dirs, _ := CgroupDirs(cgroup); len(dirs) > 0 {
		out = append(out, fmt.Sprintf("cgroup directories: %d (%s...)", len(dirs), dirs[0]))
	}
	if _, err := os.Stat(filepath.Join(c.RuncRoot, id)); err == nil {
		out = append(out, "runc state "+filepath.Join(c.RuncRoot, id))
	}
	if m, _ := MountsUnder(bundle); len(m) > 0 {
		out = append(out, fmt.Sprintf("mounts under the bundle: %v", m))
	}
	ents, _ := os.ReadDir(bundle)
	for _, e := range ents {
		switch e.Name() {
		case SpecFile, LogFIFO, AddressFile, "rootfs", "runtime.json", "log.json",
			ShimPidFile, "init.pid", "init.exit": // written by earlier tasks of the same bundle
		default:
			out = append(out, "bundle file "+e.Name())
		}
	}
	return out
}

// settledLeftovers is leftovers once they have stopped shrinking: a process
// the shim's cleanup killed is still there, exiting, for a moment (longer on
// a busy machine), and a runtime call cut short runs on for up to 10 s
// before the failure path cleans up after it; what is left 15 s on stays.
func settledLeftovers(c *Container, id, bundle, cgroup string) []string {
	l := leftovers(c, id, bundle, cgroup)
	for deadline := time.Now().Add(15 * time.Second); len(l) > 0 && time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		l = leftovers(c, id, bundle, cgroup)
	}
	return l
}

// An init's Create whose deadline passes while the runtime creates the
// container leaves nothing of it behind once the Create has failed (the task
// is NotFound): runc killed at the deadline after it had made the
// container's cgroups but before it recorded the container left those
// cgroups (every v1 hierarchy's directory), which no runtime delete finds.
// A Create again with the same id works.
func TestInitCreateCutShortByItsDeadlineLeavesNothing(t *testing.T) {
	env := NewEnv(t)
	c := env.Launch(t, Config{Mode: Bootstrap, Name: "createdl", Args: loopArgs, NullIO: true})
	ctx := TestContext(t, 5*time.Minute)
	failed := 0
	for i := 0; i < 40; i++ {
		d := time.Duration(6+i%20) * time.Millisecond
		cctx, cancel := context.WithTimeout(ctx, d)
		_, err := c.Task().Create(cctx, c.CreateRequest())
		cancel()
		if err != nil {
			time.Sleep(200 * time.Millisecond) // the shim's cleanup ends
			_, serr := c.Task().State(ctx, &taskv3.StateRequest{ID: c.ID})
			if ErrClass(serr) == "NotFound" {
				failed++
				if l := settledLeftovers(c, c.ID, c.Bundle.Dir, c.CgroupPath); len(l) > 0 {
					t.Errorf("Create cut short after %v (%v), the task NotFound, left: %v", d, err, l)
					if err := removeCgroupEventually(c.CgroupPath); err != nil {
						t.Fatal(err)
					}
				}
				// The same id again, as a manager's retry sends it: while
				// the first Create's cleanup is still under way (a loaded
				// machine) the id is still taken (AlreadyExists).
				err := c.Create(ctx)
				for end := time.Now().Add(5 * time.Second); ErrClass(err) == "AlreadyExists" && time.Now().Before(end); {
					time.Sleep(100 * time.Millisecond)
					err = c.Create(ctx)
				}
				if err != nil {
					t.Fatalf("Create again after a Create cut short: %v", err)
				}
			}
		}
		if _, err := c.Task().Delete(ctx, &taskv3.DeleteRequest{ID: c.ID}); err != nil {
			t.Fatalf("Delete of the created task: %v", err)
		}
		if l := settledLeftovers(c, c.ID, c.Bundle.Dir, c.CgroupPath); len(l) > 0 {
			t.Errorf("left after a Delete: %v", l)
		}
	}
	if failed == 0 {
		t.Skip("no Create was cut short by its deadline on this machine")
	}
	t.Logf("%d Creates cut short and failed", failed)
}

// An init's Start whose deadline passes while the runtime starts it (a
// client with a short timeout on a busy node) leaves the task in a state
// that says what runs: the runtime killed at the deadline after it had let
// the container's process run (runc's start opens the exec FIFO, and the
// init execs the process at once) left the task CREATED while its process
// ran, and runc's exec FIFO in place: a second Start then waited forever on
// that FIFO (runc still sees a created container), holding the task.
func TestInitStartCutShortByItsDeadline(t *testing.T) {
	env := NewEnv(t)
	c := env.Launch(t, Config{Mode: Bootstrap, Name: "startdl", Args: loopArgs, NullIO: true})
	ctx := TestContext(t, 5*time.Minute)
	d := 6 * time.Millisecond
	cut, inconsistent := 0, 0
	for i := 0; i < 250 && inconsistent == 0; i++ {
		if err := c.Create(ctx); err != nil {
			t.Fatal(err)
		}
		sctx, cancel := context.WithTimeout(ctx, d)
		_, err := c.Task().Start(sctx, &taskv3.StartRequest{ID: c.ID})
		cancel()
		if err == nil {
			d -= 200 * time.Microsecond
		} else {
			cut++
			// The shim's runtime call may still end; a wrong state stays.
			var st *taskv3.StateResponse
			var args []string
			runs := false
			for end := time.Now().Add(2 * time.Second); ; time.Sleep(50 * time.Millisecond) {
				var serr error
				if st, serr = c.Task().State(ctx, &taskv3.StateRequest{ID: c.ID}); serr != nil {
					t.Fatalf("State after a Start cut short: %v", serr)
				}
				args = processArgs(int(c.Pid))
				runs = len(args) > 0 && args[0] != "runc"
				if st.GetStatus() != tasktypes.Status_CREATED || !runs || time.Now().After(end) {
					break
				}
			}
			switch {
			case st.GetStatus() == tasktypes.Status_CREATED && !runs:
				d += 200 * time.Microsecond // cut before the runtime let it run
			case st.GetStatus() == tasktypes.Status_CREATED:
				inconsistent++
				t.Errorf("Start cut short after %v: %v; State says CREATED while the init %d runs %q", d, err, c.Pid, args)
				if _, err := os.Stat(filepath.Join(c.RuncRoot, c.ID, "exec.fifo")); err == nil {
					t.Logf("runc's exec.fifo is still there: runc takes the container for created")
				}
				rctx, rcancel := context.WithTimeout(ctx, 5*time.Second)
				_, rerr := c.Task().Start(rctx, &taskv3.StartRequest{ID: c.ID})
				rcancel()
				st, _ := c.Task().State(ctx, &taskv3.StateRequest{ID: c.ID})
				t.Errorf("a second Start: %v (%s), then State %v; want it started, or FailedPrecondition (running)", rerr, ErrClass(rerr), st.GetStatus())
			}
		}
		if _, err := c.Task().Kill(ctx, &taskv3.KillRequest{ID: c.ID, Signal: sigKILL}); err != nil {
			t.Logf("Kill: %v", err)
		}
		wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
		_, werr := c.Task().Wait(wctx, &taskv3.WaitRequest{ID: c.ID})
		wcancel()
		if werr != nil {
			t.Fatalf("Wait after SIGKILL: %v", werr)
		}
		dctx, dcancel := context.WithTimeout(ctx, 20*time.Second)
		_, derr := c.Task().Delete(dctx, &taskv3.DeleteRequest{ID: c.ID})
		dcancel()
		if derr != nil {
			t.Fatalf("Delete: %v", derr)
		}
	}
	if cut == 0 {
		t.Skip("no Start was cut short by its deadline on this machine")
	}
	t.Logf("%d Starts cut short, last deadline %v", cut, d)
	if l := settledLeftovers(c, c.ID, c.Bundle.Dir, c.CgroupPath); len(l) > 0 {
		t.Logf("left: %v", l)
	}
}

// Containers of one pod (one daemon) created with short deadlines and
// deleted, one after the other: each Create cut short leaves nothing of its
// container, one that was carried out is deleted as usual, the daemon keeps
// serving the pod's running container, and it leaves once that one's
// Shutdown finds it empty.
func TestPodCreateChurnWithShortDeadlines(t *testing.T) {
	env := NewEnv(t)
	group := map[string]string{"io.example.v2.group": "g-" + RandID(6)}
	a := env.Run(t, Config{Mode: Bootstrap, Name: "pod-first", Args: loopArgs, NullIO: true, Annotations: group})
	ctx := TestContext(t, 5*time.Minute)
	start(t, ctx, a, "")
	other := a.Shim.TaskAPI(t, a.Mode.TaskVersion())
	fds0 := fdCount(a.Shim.Pid)
	cut := 0
	for i := 0; i < 30; i++ {
		id := fmt.Sprintf("churn%d-%s", i, RandID(4))
		cgroup := env.CgroupParent + "/" + id
		b := NewBundle(t, t.TempDir(), NewSpec(SpecConfig{Args: loopArgs, CgroupsPath: cgroup, Annotations: group}))
		cleanupLateTask(t, a, id, b, cgroup)
		answer, err := Launch{Mode: a.Mode, Namespace: a.Namespace, ID: id, Bundle: b.Dir, Containerd: a.Containerd}.Run()
		if err != nil || answer.Socket() != a.Shim.Socket {
			t.Fatalf("start of %s: %v, %s", id, err, answer.Socket())
		}
		d := time.Duration(6+i%20) * time.Millisecond
		cctx, cancel := context.WithTimeout(ctx, d)
		_, err = other.Create(cctx, &taskv3.CreateTaskRequest{ID: id, Bundle: b.Dir})
		cancel()
		if err != nil {
			time.Sleep(200 * time.Millisecond)
			if _, serr := other.State(ctx, &taskv3.StateRequest{ID: id}); ErrClass(serr) == "NotFound" {
				cut++
				if l := settledLeftovers(a, id, b.Dir, cgroup); len(l) > 0 {
					// what the pod's first container has is not id's
					t.Errorf("Create of %s cut short after %v: %v; left: %v", id, d, err, l)
				}
				// containerd's answer to a failed Create: Delete (NotFound) and Shutdown.
				other.Delete(ctx, &taskv3.DeleteRequest{ID: id})
				if _, err := other.Shutdown(ctx, &taskv3.ShutdownRequest{ID: id}); err != nil {
					t.Fatalf("Shutdown after %s's failed Create: %v", id, err)
				}
				continue
			}
		}
		if _, err := other.Start(ctx, &taskv3.StartRequest{ID: id}); err != nil {
			t.Fatalf("Start %s: %v", id, err)
		}
		other.Kill(ctx, &taskv3.KillRequest{ID: id, Signal: sigKILL})
		if _, err := other.Wait(ctx, &taskv3.WaitRequest{ID: id}); err != nil {
			t.Fatal(err)
		}
		if _, err := other.Delete(ctx, &taskv3.DeleteRequest{ID: id}); err != nil {
			t.Fatalf("Delete %s: %v", id, err)
		}
		if _, err := other.Shutdown(ctx, &taskv3.ShutdownRequest{ID: id}); err != nil {
			t.Fatalf("Shutdown after %s's Delete: %v", id, err)
		}
		if l := settledLeftovers(a, id, b.Dir, cgroup); len(l) > 0 {
			t.Errorf("after %s's Delete: %v", id, l)
		}
	}
	t.Logf("%d Creates cut short; daemon fds %d, before the churn %d", cut, fdCount(a.Shim.Pid), fds0)
	if n := fdCount(a.Shim.Pid); n > fds0+2 {
		t.Errorf("daemon holds %d descriptors after the churn, %d before", n, fds0)
	}
	expectStatus(t, ctx, a, "", tasktypes.Status_RUNNING)
	stop(t, ctx, a)
	if _, err := a.Task().Shutdown(ctx, &taskv3.ShutdownRequest{ID: a.ID}); err != nil {
		t.Fatal(err)
	}
	if !a.Shim.Exited(WaitTimeout) {
		t.Error("the daemon stayed after its last task's Shutdown")
	}
}

// A Delete cut short by its deadline, of a created task and of an exited
// one: the task is either still there (a Delete again works, or finds it
// gone once the first has finished) or gone with nothing of it left.
func TestInitDeleteCutShortByItsDeadline(t *testing.T) {
	env := NewEnv(t)
	c := env.Launch(t, Config{Mode: Bootstrap, Name: "deletedl", Args: loopArgs, NullIO: true})
	ctx := TestContext(t, 5*time.Minute)
	for i := 0; i < 40; i++ {
		if err := c.Create(ctx); err != nil {
			t.Fatalf("Create: %v", err)
		}
		if i%2 == 1 {
			start(t, ctx, c, "")
			kill(t, ctx, c, "", sigKILL)
			wait(t, ctx, c, "")
		}
		d := time.Duration(2+i%20) * time.Millisecond
		dctx, cancel := context.WithTimeout(ctx, d)
		_, err := c.Task().Delete(dctx, &taskv3.DeleteRequest{ID: c.ID})
		cancel()
		if err != nil {
			time.Sleep(300 * time.Millisecond)
			_, serr := c.Task().State(ctx, &taskv3.StateRequest{ID: c.ID})
			if serr == nil {
				// The first Delete may still be finishing (a loaded
				// machine): the second waits for it, and then finds the
				// task gone.
				if _, err := c.Task().Delete(ctx, &taskv3.DeleteRequest{ID: c.ID}); err != nil && ErrClass(err) != "NotFound" {
					t.Fatalf("Delete again after a Delete cut short after %v: %v", d, err)
				}
			} else if ErrClass(serr) != "NotFound" {
				t.Fatalf("State after a Delete cut short: %v", serr)
			}
		}
		if l := settledLeftovers(c, c.ID, c.Bundle.Dir, c.CgroupPath); len(l) > 0 {
			t.Errorf("Delete (cut short after %v: %v) left: %v", d, err, l)
		}
	}
}
