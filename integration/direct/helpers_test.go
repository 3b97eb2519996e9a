package direct

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	eventsapi "github.com/containerd/containerd/api/events"
	taskv3 "github.com/containerd/containerd/api/runtime/task/v3"
	tasktypes "github.com/containerd/containerd/api/types/task"
)

// Signals, by number as the wire carries them.
const (
	sigKILL = 9
	sigTERM = 15
)

// loopArgs keep an init alive until it is killed. busybox sleep as PID 1
// ignores SIGTERM (no handler), so the tests stop it with SIGKILL.
var loopArgs = []string{"sleep", "100000"}

// Topics in the order the scenarios expect them.
const (
	topicCreate      = "/tasks/create"
	topicStart       = "/tasks/start"
	topicExit        = "/tasks/exit"
	topicDelete      = "/tasks/delete"
	topicExecAdded   = "/tasks/exec-added"
	topicExecStarted = "/tasks/exec-started"
	topicOOM         = "/tasks/oom"
)

// forEachAPI runs fn once per task API version, as parallel subtests: v3
// through a 2.3 bootstrap, v2 through the 1.7-2.2 JSON answer.
func forEachAPI(t *testing.T, fn func(t *testing.T, mode Mode)) {
	for _, m := range []Mode{Bootstrap, JSON2} {
		t.Run(fmt.Sprintf("v%d", m.TaskVersion()), func(t *testing.T) {
			t.Parallel()
			fn(t, m)
		})
	}
}

// expectClass fails the test unless err carries the errdefs class.
func expectClass(t *testing.T, what string, err error, class string) {
	t.Helper()
	if got := ErrClass(err); got != class {
		t.Errorf("%s: error %v (class %q), want %s", what, err, got, class)
	}
}

func start(t *testing.T, ctx context.Context, c *Container, execID string) uint32 {
	t.Helper()
	resp, err := c.Task().Start(ctx, &taskv3.StartRequest{ID: c.ID, ExecID: execID})
	if err != nil {
		t.Fatalf("Start %s %q: %v", c.ID, execID, err)
	}
	if resp.GetPid() == 0 {
		t.Fatalf("Start %s %q: pid 0", c.ID, execID)
	}
	return resp.GetPid()
}

func wait(t *testing.T, ctx context.Context, c *Container, execID string) *taskv3.WaitResponse {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, WaitTimeout)
	defer cancel()
	resp, err := c.Task().Wait(ctx, &taskv3.WaitRequest{ID: c.ID, ExecID: execID})
	if err != nil {
		t.Fatalf("Wait %s %q: %v", c.ID, execID, err)
	}
	if resp.GetExitedAt() == nil || resp.GetExitedAt().AsTime().Before(time.Now().Add(-time.Hour)) {
		t.Errorf("Wait %s %q: exited_at %v, want the time of the exit", c.ID, execID, resp.GetExitedAt())
	}
	return resp
}

func kill(t *testing.T, ctx context.Context, c *Container, execID string, sig uint32) {
	t.Helper()
	if _, err := c.Task().Kill(ctx, &taskv3.KillRequest{ID: c.ID, ExecID: execID, Signal: sig}); err != nil {
		t.Fatalf("Kill %s %q %d: %v", c.ID, execID, sig, err)
	}
}

func deleteTask(t *testing.T, ctx context.Context, c *Container, execID string) *taskv3.DeleteResponse {
	t.Helper()
	resp, err := c.Task().Delete(ctx, &taskv3.DeleteRequest{ID: c.ID, ExecID: execID})
	if err != nil {
		t.Fatalf("Delete %s %q: %v", c.ID, execID, err)
	}
	return resp
}

func state(t *testing.T, ctx context.Context, c *Container, execID string) *taskv3.StateResponse {
	t.Helper()
	resp, err := c.Task().State(ctx, &taskv3.StateRequest{ID: c.ID, ExecID: execID})
	if err != nil {
		t.Fatalf("State %s %q: %v", c.ID, execID, err)
	}
	return resp
}

func addExec(t *testing.T, ctx context.Context, c *Container, execID string, args []string, io *Stdio) {
	t.Helper()
	if _, err := c.Task().Exec(ctx, c.ExecRequest(t, execID, args, io)); err != nil {
		t.Fatalf("Exec %s %q: %v", c.ID, execID, err)
	}
}

// stop kills a running init, waits for it and deletes the task, checking
// the exit status of a SIGKILL.
func stop(t *testing.T, ctx context.Context, c *Container) {
	t.Helper()
	kill(t, ctx, c, "", sigKILL)
	if got := wait(t, ctx, c, "").GetExitStatus(); got != 137 {
		t.Errorf("init of %s after SIGKILL: exit status %d, want 137", c.ID, got)
	}
	deleteTask(t, ctx, c, "")
}

// expectStatus checks a process's State.
func expectStatus(t *testing.T, ctx context.Context, c *Container, execID string, want tasktypes.Status) *taskv3.StateResponse {
	t.Helper()
	st := state(t, ctx, c, execID)
	if st.GetStatus() != want {
		t.Errorf("State %s %q: status %v, want %v", c.ID, execID, st.GetStatus(), want)
	}
	return st
}

// exitEvent returns the /tasks/exit of process id (the container id for the
// init), waiting for it.
func exitEvent(t *testing.T, c *Container, id string) *eventsapi.TaskExit {
	t.Helper()
	evs := c.Containerd.WaitEvents(t, WaitTimeout, "/tasks/exit of "+id, func(evs []Event) bool {
		return findExit(evs, id) != nil
	})
	return findExit(evs, id)
}

func findExit(evs []Event, id string) *eventsapi.TaskExit {
	for _, e := range evs {
		if x, ok := e.Payload.(*eventsapi.TaskExit); ok && e.Topic == topicExit && x.GetID() == id {
			return x
		}
	}
	return nil
}

// sameText compares long outputs, reporting where they first differ.
func sameText(t *testing.T, what, got, want string) {
	t.Helper()
	if got == want {
		return
	}
	i := 0
	for i < len(got) && i < len(want) && got[i] == want[i] {
		i++
	}
	t.Errorf("%s: %d bytes, want %d; first difference at byte %d: got %q, want %q",
		what, len(got), len(want), i, clip(got[i:min(len(got), i+40)]), clip(want[i:min(len(want), i+40)]))
}

// seqOutput is what `seq 1 n` prints.
func seqOutput(n int) string {
	var b strings.Builder
	for i := 1; i <= n; i++ {
		fmt.Fprintf(&b, "%d\n", i)
	}
	return b.String()
}
