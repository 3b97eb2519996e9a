package integration

import (
	"context"
	"fmt"
	"testing"
	"time"

	apievents "github.com/containerd/containerd/api/events"
	"github.com/containerd/containerd/v2/core/events"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/typeurl/v2"

	"github.com/example/containerd-shim-example-v2/integration/harness"
)

const syncTopic = "/ex-test/sync"

// Scenario 3: exit status and time through the Go client's Wait, and the task events
// /tasks/create, /tasks/start, /tasks/exit, /tasks/delete in that order with the right
// container id, pid and exit status.
func TestWaitExitStatusAndEvents(t *testing.T) {
	forEachFlavor(t, func(t *testing.T, d *harness.Daemon) {
		ctx, ns := d.NewNamespace(t)
		ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		const id = "ev1"
		c := d.Client()

		// Subscribe before anything happens. A sync event published to the namespace proves the
		// subscription is live on the daemon before the task is created.
		sctx, scancel := context.WithCancel(ctx)
		defer scancel()
		envC, errC := c.EventService().Subscribe(sctx,
			fmt.Sprintf(`namespace==%q,topic~="/tasks/"`, ns),
			fmt.Sprintf(`namespace==%q,topic==%q`, ns, syncTopic))
		waitSync(t, ctx, c.EventService(), envC, errC)

		ctr := newContainer(t, ctx, d, id, []string{"sh", "-c", "exit 42"})
		before := time.Now()
		task, err := ctr.NewTask(ctx, cio.NullIO)
		if err != nil {
			t.Fatalf("new task: %v", err)
		}
		pid := task.Pid()
		if pid == 0 {
			t.Errorf("NewTask returned pid 0")
		}
		statusC, err := task.Wait(ctx)
		if err != nil {
			t.Fatalf("wait: %v", err)
		}
		if err := task.Start(ctx); err != nil {
			t.Fatalf("start: %v", err)
		}
		var st struct {
			code uint32
			at   time.Time
		}
		select {
		case s := <-statusC:
			code, at, err := s.Result()
			if err != nil {
				t.Fatalf("wait result: %v", err)
			}
			st.code, st.at = code, at
		case <-ctx.Done():
			t.Fatalf("task did not exit: %v", ctx.Err())
		}
		after := time.Now()
		if st.code != 42 {
			t.Errorf("Wait: exit status %d, want 42", st.code)
		}
		checkExitTime(t, "Wait", st.at, before, after)

		del, err := task.Delete(ctx)
		if err != nil {
			t.Fatalf("delete: %v", err)
		}
		if del.ExitCode() != 42 {
			t.Errorf("Delete: exit status %d, want 42", del.ExitCode())
		}
		checkExitTime(t, "Delete", del.ExitTime(), before, time.Now())

		want := []string{"/tasks/create", "/tasks/start", "/tasks/exit", "/tasks/delete"}
		// Collect /tasks/ events up to /tasks/delete.
		var got []*events.Envelope
	collect:
		for {
			select {
			case env := <-envC:
				if env.Topic == syncTopic {
					continue
				}
				got = append(got, env)
				if env.Topic == "/tasks/delete" {
					break collect
				}
			case err := <-errC:
				t.Fatalf("event subscription failed: %v", err)
			case <-time.After(10 * time.Second):
				if stockRunc2x(d) {
					// Known stock-shim shortcoming: containerd 2.x's runc shim publishes
					// /tasks/delete from a goroutine and, on Shutdown, exits once the event channel
					// is closed without waiting for that goroutine to send what is queued (1.6's shim
					// waits for its publisher). The last event is lost in roughly 1 run in 5.
					t.Logf("no /tasks/delete event within 10s: tolerated for the stock 2.x runc shim (it may exit before forwarding it)")
					want = want[:3]
					break collect
				}
				t.Fatalf("no /tasks/delete event within 10s; got %s", topics(got))
			}
		}
		// Anything that arrives shortly after /tasks/delete would be a duplicate or out of order.
		extra := time.After(500 * time.Millisecond)
	drain:
		for {
			select {
			case env := <-envC:
				if env.Topic != syncTopic {
					got = append(got, env)
				}
			case <-extra:
				break drain
			}
		}

		if fmt.Sprint(topics(got)) != fmt.Sprint(want) {
			t.Fatalf("task events %v, want %v", topics(got), want)
		}
		for _, env := range got {
			if env.Namespace != ns {
				t.Errorf("%s: namespace %q, want %q", env.Topic, env.Namespace, ns)
			}
			v, err := typeurl.UnmarshalAny(env.Event)
			if err != nil {
				t.Errorf("%s: decode %s: %v", env.Topic, env.Event.GetTypeUrl(), err)
				continue
			}
			switch e := v.(type) {
			case *apievents.TaskCreate:
				if e.ContainerID != id || e.Pid != pid {
					t.Errorf("/tasks/create: container %q pid %d, want %q %d", e.ContainerID, e.Pid, id, pid)
				}
				if e.Bundle == "" {
					t.Errorf("/tasks/create: empty bundle")
				}
			case *apievents.TaskStart:
				if e.ContainerID != id || e.Pid != pid {
					t.Errorf("/tasks/start: container %q pid %d, want %q %d", e.ContainerID, e.Pid, id, pid)
				}
			case *apievents.TaskExit:
				if e.ContainerID != id || e.Pid != pid || e.ExitStatus != 42 {
					t.Errorf("/tasks/exit: container %q pid %d status %d, want %q %d 42", e.ContainerID, e.Pid, e.ExitStatus, id, pid)
				}
				if e.ID != id {
					t.Errorf("/tasks/exit: process id %q, want the container id %q (init)", e.ID, id)
				}
				checkExitTime(t, "/tasks/exit", e.ExitedAt.AsTime(), before, after)
			case *apievents.TaskDelete:
				if e.ContainerID != id || e.Pid != pid || e.ExitStatus != 42 {
					t.Errorf("/tasks/delete: container %q pid %d status %d, want %q %d 42", e.ContainerID, e.Pid, e.ExitStatus, id, pid)
				}
				checkExitTime(t, "/tasks/delete", e.ExitedAt.AsTime(), before, after)
			default:
				t.Errorf("%s: unexpected event type %T", env.Topic, v)
			}
		}
	})
}

// waitSync publishes sync events until one comes back through the subscription.
func waitSync(t *testing.T, ctx context.Context, pub events.Publisher, envC <-chan *events.Envelope, errC <-chan error) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		if err := pub.Publish(ctx, syncTopic, &apievents.ContainerUpdate{ID: "sync"}); err != nil {
			t.Fatalf("publish sync event: %v", err)
		}
		select {
		case env := <-envC:
			if env.Topic == syncTopic {
				return
			}
			t.Fatalf("unexpected event %s before the test started", env.Topic)
		case err := <-errC:
			t.Fatalf("event subscription failed: %v", err)
		case <-time.After(200 * time.Millisecond):
		case <-deadline:
			t.Fatalf("event subscription not live within 10s")
		}
	}
}

func topics(envs []*events.Envelope) []string {
	var out []string
	for _, e := range envs {
		out = append(out, e.Topic)
	}
	return out
}

// checkExitTime fails unless at lies within [before, after] (with a little slack for
// clock granularity).
func checkExitTime(t *testing.T, what string, at, before, after time.Time) {
	t.Helper()
	const slack = time.Second
	if at.IsZero() || at.Unix() <= 0 {
		t.Errorf("%s: exit time is zero", what)
		return
	}
	if at.Before(before.Add(-slack)) || at.After(after.Add(slack)) {
		t.Errorf("%s: exit time %v outside the test's window [%v, %v]", what, at, before, after)
	}
}
