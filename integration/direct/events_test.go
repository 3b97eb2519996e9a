package direct

import (
	"testing"
	"time"

	eventsapi "github.com/containerd/containerd/api/events"
)

// The events of a task with one exec come in exactly this order, each with
// the payload containerd's consumers read: create, start, exec-added,
// exec-started, exit of the exec, exit of the init, delete (PROTOCOL.md
// §4.2, §4.3). Deleting the exec publishes nothing, as with the stock shim.
func TestEventOrder(t *testing.T) {
	t.Parallel()
	forEachAPI(t, func(t *testing.T, mode Mode) {
		env := NewEnv(t)
		c := env.Run(t, Config{Mode: mode, Name: "ev", Args: loopArgs})
		ctx := TestContext(t, time.Minute)
		initPid := start(t, ctx, c, "")
		addExec(t, ctx, c, "ex1", []string{"sh", "-c", "exit 4"}, nil)
		execPid := start(t, ctx, c, "ex1")
		if got := wait(t, ctx, c, "ex1").GetExitStatus(); got != 4 {
			t.Errorf("exec exit status %d, want 4", got)
		}
		deleteTask(t, ctx, c, "ex1")
		stop(t, ctx, c)
		c.Containerd.WaitTopic(t, WaitTimeout, topicDelete, 1)
		// A stray event after the delete would show up within this pause.
		time.Sleep(100 * time.Millisecond)
		evs := c.Containerd.Events()
		expectTopics(t, evs, topicCreate, topicStart, topicExecAdded, topicExecStarted, topicExit, topicExit, topicDelete)
		CheckEnvelopes(t, evs, c.Namespace)
		if len(evs) != 7 {
			return
		}
		check := func(what string, got, want any) {
			if got != want {
				t.Errorf("%s: %v, want %v", what, got, want)
			}
		}
		if e, ok := evs[0].Payload.(*eventsapi.TaskCreate); ok {
			check("create container", e.GetContainerID(), c.ID)
			check("create bundle", e.GetBundle(), c.Bundle.Dir)
			check("create pid", e.GetPid(), c.Pid)
			check("create stdout", e.GetIO().GetStdout(), c.IO.Stdout)
			check("create stderr", e.GetIO().GetStderr(), c.IO.Stderr)
		}
		if e, ok := evs[1].Payload.(*eventsapi.TaskStart); ok {
			check("start container", e.GetContainerID(), c.ID)
			check("start pid", e.GetPid(), initPid)
		}
		if e, ok := evs[2].Payload.(*eventsapi.TaskExecAdded); ok {
			check("exec-added container", e.GetContainerID(), c.ID)
			check("exec-added exec", e.GetExecID(), "ex1")
		}
		if e, ok := evs[3].Payload.(*eventsapi.TaskExecStarted); ok {
			check("exec-started container", e.GetContainerID(), c.ID)
			check("exec-started exec", e.GetExecID(), "ex1")
			check("exec-started pid", e.GetPid(), execPid)
		}
		if e, ok := evs[4].Payload.(*eventsapi.TaskExit); ok {
			check("exec exit container", e.GetContainerID(), c.ID)
			check("exec exit id", e.GetID(), "ex1")
			check("exec exit pid", e.GetPid(), execPid)
			check("exec exit status", e.GetExitStatus(), uint32(4))
		}
		if e, ok := evs[5].Payload.(*eventsapi.TaskExit); ok {
			check("init exit container", e.GetContainerID(), c.ID)
			check("init exit id", e.GetID(), c.ID)
			check("init exit pid", e.GetPid(), initPid)
			check("init exit status", e.GetExitStatus(), uint32(137))
		}
		if e, ok := evs[6].Payload.(*eventsapi.TaskDelete); ok {
			check("delete container", e.GetContainerID(), c.ID)
			check("delete pid", e.GetPid(), initPid)
			check("delete status", e.GetExitStatus(), uint32(137))
			check("delete id", e.GetID(), "")
		}
	})
}
