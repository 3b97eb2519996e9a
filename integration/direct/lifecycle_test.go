package direct

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	eventsapi "github.com/containerd/containerd/api/events"
	taskv3 "github.com/containerd/containerd/api/runtime/task/v3"
	tasktypes "github.com/containerd/containerd/api/types/task"
)

// An init's exit code reaches the manager unchanged through Wait, State,
// Delete and /tasks/exit; 127 is a shell's "command not found".
func TestExitCodes(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		args []string
		code uint32
	}{
		{"0", []string{"true"}, 0},
		{"1", []string{"false"}, 1},
		{"2", []string{"sh", "-c", "exit 2"}, 2},
		{"42", []string{"sh", "-c", "exit 42"}, 42},
		{"127-not-found", []string{"sh", "-c", "no-such-command"}, 127},
		{"255", []string{"sh", "-c", "exit 255"}, 255},
	}
	forEachAPI(t, func(t *testing.T, mode Mode) {
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				t.Parallel()
				env := NewEnv(t)
				c := env.Run(t, Config{Mode: mode, Name: "exit", Args: tc.args})
				ctx := TestContext(t, time.Minute)
				if pid := start(t, ctx, c, ""); pid != c.Pid {
					t.Errorf("Start pid %d, Create said %d", pid, c.Pid)
				}
				w := wait(t, ctx, c, "")
				if w.GetExitStatus() != tc.code {
					t.Errorf("Wait: exit status %d, want %d", w.GetExitStatus(), tc.code)
				}
				st := expectStatus(t, ctx, c, "", tasktypes.Status_STOPPED)
				if st.GetExitStatus() != tc.code || st.GetPid() != c.Pid || st.GetID() != c.ID || st.GetBundle() != c.Bundle.Dir {
					t.Errorf("State: exit %d pid %d id %q bundle %q, want %d %d %q %q",
						st.GetExitStatus(), st.GetPid(), st.GetID(), st.GetBundle(), tc.code, c.Pid, c.ID, c.Bundle.Dir)
				}
				_, stderr := c.IO.Output(t, WaitTimeout)
				if tc.code == 127 && !strings.Contains(stderr, "not found") {
					t.Errorf("stderr %q does not say the command was not found", stderr)
				}
				d := deleteTask(t, ctx, c, "")
				if d.GetExitStatus() != tc.code || d.GetPid() != c.Pid {
					t.Errorf("Delete: exit status %d pid %d, want %d %d", d.GetExitStatus(), d.GetPid(), tc.code, c.Pid)
				}
				if !d.GetExitedAt().AsTime().Equal(w.GetExitedAt().AsTime()) {
					t.Errorf("Delete exited_at %v, Wait said %v", d.GetExitedAt().AsTime(), w.GetExitedAt().AsTime())
				}
				x := exitEvent(t, c, c.ID)
				if x.GetExitStatus() != tc.code || x.GetPid() != c.Pid || x.GetContainerID() != c.ID {
					t.Errorf("/tasks/exit: status %d pid %d container %q, want %d %d %q", x.GetExitStatus(), x.GetPid(), x.GetContainerID(), tc.code, c.Pid, c.ID)
				}
			})
		}
	})
}

// An init that exits the moment it starts is reported with its code to a
// Wait issued before Start (as CRI does), and its events still come in
// order: create, start, exit, then delete.
func TestFastExit(t *testing.T) {
	t.Parallel()
	forEachAPI(t, func(t *testing.T, mode Mode) {
		env := NewEnv(t)
		c := env.Run(t, Config{Mode: mode, Name: "fast", Args: []string{"sh", "-c", "exit 9"}})
		ctx := TestContext(t, time.Minute)
		waited := make(chan *taskv3.WaitResponse, 1)
		waitErr := make(chan error, 1)
		go func() {
			wctx, cancel := context.WithTimeout(ctx, WaitTimeout)
			defer cancel()
			w, err := c.Task().Wait(wctx, &taskv3.WaitRequest{ID: c.ID})
			waited <- w
			waitErr <- err
		}()
		// Give the Wait time to reach the shim before the process can exit;
		// if it arrives late it must still be answered, so this only makes
		// the early path the likely one.
		time.Sleep(50 * time.Millisecond)
		start(t, ctx, c, "")
		w, err := <-waited, <-waitErr
		if err != nil {
			t.Fatalf("Wait issued before Start: %v", err)
		}
		if w.GetExitStatus() != 9 {
			t.Errorf("Wait issued before Start: exit status %d, want 9", w.GetExitStatus())
		}
		c.Containerd.WaitTopic(t, WaitTimeout, topicExit, 1)
		deleteTask(t, ctx, c, "")
		evs := c.Containerd.WaitTopic(t, WaitTimeout, topicDelete, 1)
		expectTopics(t, evs, topicCreate, topicStart, topicExit, topicDelete)
		CheckEnvelopes(t, evs, c.Namespace)
	})
}

// An init killed while still created (before Start) exits 137; Start then
// fails and Delete reports the kill.
func TestKilledBeforeStart(t *testing.T) {
	t.Parallel()
	env := NewEnv(t)
	c := env.Run(t, Config{Mode: Bootstrap, Name: "prekill", Args: loopArgs})
	ctx := TestContext(t, time.Minute)
	expectStatus(t, ctx, c, "", tasktypes.Status_CREATED)
	kill(t, ctx, c, "", sigKILL)
	if got := wait(t, ctx, c, "").GetExitStatus(); got != 137 {
		t.Errorf("Wait after SIGKILL of a created init: exit status %d, want 137", got)
	}
	if _, err := c.Task().Start(ctx, &taskv3.StartRequest{ID: c.ID}); err == nil {
		t.Errorf("Start of a killed init succeeded")
	}
	if d := deleteTask(t, ctx, c, ""); d.GetExitStatus() != 137 {
		t.Errorf("Delete: exit status %d, want 137", d.GetExitStatus())
	}
	evs := c.Containerd.WaitTopic(t, WaitTimeout, topicDelete, 1)
	if last := evs[len(evs)-1].Topic; last != topicDelete {
		t.Errorf("last event %s, want %s; events %s", last, topicDelete, describeEvents(evs))
	}
}

// A task created and deleted without ever starting: Delete reports it
// killed (137), a Wait blocked on it returns instead of hanging, and the
// events are create then delete, with no exit for a process that never
// started (an exit must follow a start).
func TestDeleteCreated(t *testing.T) {
	t.Parallel()
	env := NewEnv(t)
	c := env.Run(t, Config{Mode: Bootstrap, Name: "never", Args: loopArgs, NullIO: true})
	ctx := TestContext(t, time.Minute)
	waited := make(chan error, 1)
	go func() {
		wctx, cancel := context.WithTimeout(ctx, WaitTimeout)
		defer cancel()
		_, err := c.Task().Wait(wctx, &taskv3.WaitRequest{ID: c.ID})
		waited <- err
	}()
	time.Sleep(50 * time.Millisecond) // let the Wait reach the shim first
	d := deleteTask(t, ctx, c, "")
	if d.GetExitStatus() != 137 || d.GetPid() != c.Pid {
		t.Errorf("Delete of a created task: status %d pid %d, want 137 %d", d.GetExitStatus(), d.GetPid(), c.Pid)
	}
	if err := <-waited; err != nil && ErrClass(err) == "DeadlineExceeded" {
		t.Errorf("Wait on a task deleted before Start never returned")
	}
	evs := c.Containerd.WaitTopic(t, WaitTimeout, topicDelete, 1)
	expectTopics(t, evs, topicCreate, topicDelete)
}

// Everything an init writes before it exits reaches the client, in order,
// nothing lost, and the FIFOs then end.
func TestOutputThenExit(t *testing.T) {
	t.Parallel()
	const lines = 100000 // about 590 KB: many times the pipe and FIFO buffers
	env := NewEnv(t)
	c := env.Run(t, Config{Mode: Bootstrap, Name: "out",
		Args: []string{"sh", "-c", "seq 1 100000; echo to-stderr >&2; exit 3"}})
	ctx := TestContext(t, time.Minute)
	start(t, ctx, c, "")
	if got := wait(t, ctx, c, "").GetExitStatus(); got != 3 {
		t.Errorf("exit status %d, want 3", got)
	}
	stdout, stderr := c.IO.Output(t, WaitTimeout)
	sameText(t, "stdout", stdout, seqOutput(lines))
	if stderr != "to-stderr\n" {
		t.Errorf("stderr %q, want %q", stderr, "to-stderr\n")
	}
	deleteTask(t, ctx, c, "")
}

// Delete reports the exit and forgets the task: a second Delete, State and
// Wait are NotFound; a running task cannot be deleted. The bundle stays
// (it is the manager's); runc's state, mounts and the cgroup go.
func TestDelete(t *testing.T) {
	t.Parallel()
	forEachAPI(t, func(t *testing.T, mode Mode) {
		env := NewEnv(t)
		c := env.Run(t, Config{Mode: mode, Name: "del", Args: loopArgs, NullIO: true})
		ctx := TestContext(t, time.Minute)
		start(t, ctx, c, "")
		_, err := c.Task().Delete(ctx, &taskv3.DeleteRequest{ID: c.ID})
		expectClass(t, "Delete of a running task", err, "FailedPrecondition")
		expectStatus(t, ctx, c, "", tasktypes.Status_RUNNING)
		kill(t, ctx, c, "", sigKILL)
		w := wait(t, ctx, c, "")
		d := deleteTask(t, ctx, c, "")
		if d.GetExitStatus() != 137 || d.GetPid() != c.Pid || !d.GetExitedAt().AsTime().Equal(w.GetExitedAt().AsTime()) {
			t.Errorf("Delete: status %d pid %d exited_at %v, want 137 %d %v", d.GetExitStatus(), d.GetPid(), d.GetExitedAt().AsTime(), c.Pid, w.GetExitedAt().AsTime())
		}
		_, err = c.Task().Delete(ctx, &taskv3.DeleteRequest{ID: c.ID})
		expectClass(t, "second Delete", err, "NotFound")
		_, err = c.Task().State(ctx, &taskv3.StateRequest{ID: c.ID})
		expectClass(t, "State after Delete", err, "NotFound")
		_, err = c.Task().Wait(ctx, &taskv3.WaitRequest{ID: c.ID})
		expectClass(t, "Wait after Delete", err, "NotFound")

		if _, err := os.Stat(filepath.Join(c.Bundle.Dir, SpecFile)); err != nil {
			t.Errorf("bundle after Delete: %v (the bundle is the manager's to remove)", err)
		}
		if _, err := os.Stat(filepath.Join(c.RuncRoot, c.ID)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("runc state of %s after Delete: %v, want it gone", c.ID, err)
		}
		if m, err := MountsUnder(c.Bundle.Dir); err != nil || len(m) > 0 {
			t.Errorf("mounts under the bundle after Delete: %v %v", m, err)
		}
		if dirs, err := CgroupDirs(c.CgroupPath); err != nil || len(dirs) > 0 {
			t.Errorf("cgroup of the task after Delete: %v %v", dirs, err)
		}
		x := c.Containerd.WaitTopic(t, WaitTimeout, topicDelete, 1)
		del := x[len(x)-1].Payload.(*eventsapi.TaskDelete)
		if del.GetContainerID() != c.ID || del.GetExitStatus() != 137 || del.GetPid() != c.Pid {
			t.Errorf("/tasks/delete: %v, want container %s status 137 pid %d", del, c.ID, c.Pid)
		}
	})
}

// Shutdown keeps a shim that still holds a task; once the task is deleted,
// it exits, removes its socket, and has delivered its last event.
func TestShutdown(t *testing.T) {
	t.Parallel()
	forEachAPI(t, func(t *testing.T, mode Mode) {
		env := NewEnv(t)
		c := env.Run(t, Config{Mode: mode, Name: "shut", Args: []string{"true"}, NullIO: true})
		ctx := TestContext(t, time.Minute)
		start(t, ctx, c, "")
		wait(t, ctx, c, "")
		if _, err := c.Task().Shutdown(ctx, &taskv3.ShutdownRequest{ID: c.ID}); err != nil {
			t.Fatalf("Shutdown with a task left: %v", err)
		}
		if !c.Shim.Stays(500 * time.Millisecond) {
			t.Fatalf("shim exited on Shutdown while it still held task %s", c.ID)
		}
		expectStatus(t, ctx, c, "", tasktypes.Status_STOPPED)
		deleteTask(t, ctx, c, "")
		// Answered before the daemon closes the connection. containerd
		// would ignore ttrpc.ErrClosed here, a tool driving the shim would not.
		if _, err := c.Task().Shutdown(ctx, &taskv3.ShutdownRequest{ID: c.ID}); err != nil {
			t.Errorf("the last Shutdown: %v, want its answer", err)
		}
		if !c.Shim.Exited(WaitTimeout) {
			t.Fatalf("shim %d still running after the last Shutdown", c.Shim.Pid)
		}
		if _, err := os.Lstat(c.Shim.Socket); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("socket %s after the shim exited: %v, want it removed", c.Shim.Socket, err)
		}
		if _, err := c.Task().Connect(ctx, &taskv3.ConnectRequest{ID: c.ID}); err == nil {
			t.Errorf("Connect succeeded after the shim exited")
		}
		// Flushed before exit: /tasks/delete was forwarded, and nothing after it.
		evs := c.Containerd.Events()
		if len(evs) == 0 || evs[len(evs)-1].Topic != topicDelete {
			t.Errorf("events after the shim exited: %s, want /tasks/delete last", describeEvents(evs))
		}
		if _, err := os.Stat(filepath.Join(c.RuncRoot, c.ID)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("runc state of %s after Shutdown: %v", c.ID, err)
		}
	})
}

// expectTopics checks the exact sequence of topics.
func expectTopics(t *testing.T, evs []Event, want ...string) {
	t.Helper()
	var got []string
	for _, e := range evs {
		got = append(got, e.Topic)
	}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("topics %v, want %v (events %s)", got, want, describeEvents(evs))
	}
}
