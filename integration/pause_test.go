package integration

import (
	"context"
	"fmt"
	"strconv"
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

// countArgs prints 1, 2, 3, ... on stdout, one line every 50 ms, until killed.
var countArgs = []string{"sh", "-c", "i=0; while :; do i=$((i+1)); echo $i; sleep 0.05; done"}

// lastCount returns the last complete number a counting container printed, or 0.
func lastCount(out string) int {
	lines := strings.Split(out, "\n")
	// The last element is what follows the final newline: empty, or a partial line.
	for i := len(lines) - 2; i >= 0; i-- {
		if n, err := strconv.Atoi(lines[i]); err == nil {
			return n
		}
	}
	return 0
}

// Pause/Resume: a paused container makes no progress and is reported PAUSED (Go client and
// `ctr task ls`), its cgroup's freezer says frozen (v1 freezer.state, v2 cgroup.events); after Resume it counts on from where it stopped. /tasks/paused and
// /tasks/resumed are published.
func TestPauseResume(t *testing.T) {
	forEachFlavor(t, func(t *testing.T, d *harness.Daemon) {
		ctx, ns := d.NewNamespace(t)
		ctx, cancel := context.WithTimeout(ctx, 45*time.Second)
		defer cancel()
		const id = "p1"
		ctr := newContainer(t, ctx, d, id, countArgs)
		var out lockedBuffer
		task, _ := startTask(t, ctx, ctr, cio.NewCreator(cio.WithStreams(nil, &out, &out), cio.WithFIFODir(d.FIFODir)))
		waitFor(t, 10*time.Second, "container counting", func() bool { return lastCount(out.String()) >= 3 })
		evs := subscribeTaskEvents(t, ctx, d, ns)

		if err := task.Pause(ctx); err != nil {
			t.Fatalf("pause: %v", err)
		}
		st, err := task.Status(ctx)
		if err != nil || st.Status != containerd.Paused {
			t.Errorf("status after Pause: %q err %v, want paused", st.Status, err)
		}
		if row := ctrTaskList(t, ctx, d)[id]; row.Status != "PAUSED" {
			t.Errorf("ctr task ls after Pause: %q, want PAUSED", row.Status)
		}
		cg := cgroupOf(t, task.Pid())
		if got := frozenState(t, cg); got != "frozen" {
			t.Errorf("cgroup freezer after Pause: %s, want frozen", got)
		}
		// What was on its way through the FIFOs when the cgroup froze still arrives; after that
		// the count must stand still.
		time.Sleep(200 * time.Millisecond)
		frozenAt := lastCount(out.String())
		time.Sleep(600 * time.Millisecond)
		if n := lastCount(out.String()); n != frozenAt {
			t.Errorf("paused container went on counting: %d, then %d 600ms later", frozenAt, n)
		}

		if err := task.Resume(ctx); err != nil {
			t.Fatalf("resume: %v", err)
		}
		expectRunning(t, ctx, task, "after Resume")
		if got := frozenState(t, cg); got != "thawed" {
			t.Errorf("cgroup freezer after Resume: %s, want thawed", got)
		}
		if row := ctrTaskList(t, ctx, d)[id]; row.Status != "RUNNING" {
			t.Errorf("ctr task ls after Resume: %q, want RUNNING", row.Status)
		}
		waitFor(t, 10*time.Second, "counting resumed", func() bool { return lastCount(out.String()) >= frozenAt+3 })
		// It continued, not restarted: the lines after the pause follow on without a gap.
		checkContiguous(t, out.String())

		got := evs.collect(t, 10*time.Second, "/tasks/resumed", func(e taskEvent) bool { return e.Topic == "/tasks/resumed" })
		var topics []string
		for _, e := range got {
			topics = append(topics, e.Topic)
			switch x := e.Event.(type) {
			case *apievents.TaskPaused:
				if x.ContainerID != id {
					t.Errorf("/tasks/paused: container %q, want %q", x.ContainerID, id)
				}
			case *apievents.TaskResumed:
				if x.ContainerID != id {
					t.Errorf("/tasks/resumed: container %q, want %q", x.ContainerID, id)
				}
			}
		}
		if fmt.Sprint(topics) != fmt.Sprint([]string{"/tasks/paused", "/tasks/resumed"}) {
			t.Errorf("events %v, want [/tasks/paused /tasks/resumed]", topics)
		}
	})
}

// checkContiguous fails unless out is the lines 1, 2, 3, ... n (a partial last line aside).
func checkContiguous(t *testing.T, out string) {
	t.Helper()
	lines := strings.Split(out, "\n")
	for i, l := range lines[:len(lines)-1] {
		if l != strconv.Itoa(i+1) {
			t.Errorf("counter output line %d is %q, want %d", i+1, l, i+1)
			return
		}
	}
}

// frozenState reads the cgroup's freezer: v1 freezer.state (FROZEN, THAWED), v2
// cgroup.events "frozen 0|1" (what cgroup.freeze has achieved, not only asked for).
func frozenState(t *testing.T, cg cgroupFS) string {
	t.Helper()
	if !cg.v2 {
		return strings.ToLower(cg.read(t, "freezer", "freezer.state", ""))
	}
	for _, line := range strings.Split(cg.read(t, "", "", "cgroup.events"), "\n") {
		switch line {
		case "frozen 1":
			return "frozen"
		case "frozen 0":
			return "thawed"
		}
	}
	t.Fatalf("cgroup.events has no frozen line")
	return ""
}

// Killed while paused (what `docker kill` and `docker rm -f` do: SIGKILL, then Resume):
// Resume answers with success or FailedPrecondition, never an error of unknown class, and
// the task exits 137 and is deleted cleanly.
func TestKillWhilePaused(t *testing.T) {
	forEachFlavor(t, func(t *testing.T, d *harness.Daemon) {
		ctx, ns := d.NewNamespace(t)
		ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		const id = "p2"
		task, statusC := startTask(t, ctx, newContainer(t, ctx, d, id, loopArgs), cio.NullIO)
		if err := task.Pause(ctx); err != nil {
			t.Fatalf("pause: %v", err)
		}
		if err := task.Kill(ctx, syscall.SIGKILL); err != nil {
			t.Fatalf("kill: %v", err)
		}
		if err := task.Resume(ctx); err != nil && !errdefs.IsFailedPrecondition(err) && !errdefs.IsNotFound(err) {
			t.Errorf("resume of a killed paused task: %v (%s), want success or FailedPrecondition", err, errCode(err))
		}
		if code := exitCode(t, ctx, statusC); code != 137 {
			t.Errorf("exit code %d, want 137", code)
		}
		if _, err := task.Delete(ctx); err != nil {
			t.Errorf("delete: %v", err)
		}
		expectNoLeftovers(t, d, ns, id)
	})
}
