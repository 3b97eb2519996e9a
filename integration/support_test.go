package integration

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/events"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/typeurl/v2"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/example/containerd-shim-example-v2/integration/harness"
)

// Helpers shared by the scenario files that came after the first batch (exec, terminal,
// stdin, pause, resources, checkpoint, info).

// ioDrainTimeout bounds how long a test waits for a process's stdout/stderr FIFOs to reach
// EOF after the process exited: the shim closes them once it has copied everything.
const ioDrainTimeout = 15 * time.Second

// taskEvent is one decoded event of a subscription.
type taskEvent struct {
	Topic string
	Event any
}

func (e taskEvent) String() string { return fmt.Sprintf("%s %+v", e.Topic, e.Event) }

// eventStream is a live subscription to the /tasks/ events of one namespace.
type eventStream struct {
	envC <-chan *events.Envelope
	errC <-chan error
}

// subscribeTaskEvents subscribes to the /tasks/ events of namespace ns and returns once the
// subscription is proven live (a sync event came back through it). The subscription ends
// with ctx.
func subscribeTaskEvents(t *testing.T, ctx context.Context, d *harness.Daemon, ns string) *eventStream {
	t.Helper()
	c := d.Client()
	envC, errC := c.EventService().Subscribe(ctx,
		fmt.Sprintf(`namespace==%q,topic~="/tasks/"`, ns),
		fmt.Sprintf(`namespace==%q,topic==%q`, ns, syncTopic))
	waitSync(t, ctx, c.EventService(), envC, errC)
	return &eventStream{envC: envC, errC: errC}
}

// collect gathers decoded events until stop returns true for one of them (which is
// included), failing the test if that does not happen within timeout.
func (s *eventStream) collect(t *testing.T, timeout time.Duration, what string, stop func(taskEvent) bool) []taskEvent {
	t.Helper()
	var got []taskEvent
	deadline := time.After(timeout)
	for {
		select {
		case env := <-s.envC:
			if env.Topic == syncTopic {
				continue
			}
			v, err := typeurl.UnmarshalAny(env.Event)
			if err != nil {
				t.Fatalf("%s: decode %s: %v", env.Topic, env.Event.GetTypeUrl(), err)
			}
			ev := taskEvent{Topic: env.Topic, Event: v}
			got = append(got, ev)
			if stop(ev) {
				return got
			}
		case err := <-s.errC:
			t.Fatalf("event subscription failed: %v", err)
		case <-deadline:
			t.Fatalf("no %s event within %v; got %v", what, timeout, got)
		}
	}
}

// waitIO waits until the client side of a process's IO has seen EOF on stdout and stderr.
func waitIO(t *testing.T, what string, pio cio.IO) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		pio.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(ioDrainTimeout):
		pio.Cancel()
		t.Fatalf("%s: stdout/stderr not closed by the shim within %v of the exit", what, ioDrainTimeout)
	}
}

// startTask creates and starts a task with the given IO and task options and returns it
// with its Wait channel.
func startTask(t *testing.T, ctx context.Context, ctr containerd.Container, ioc cio.Creator, opts ...containerd.NewTaskOpts) (containerd.Task, <-chan containerd.ExitStatus) {
	t.Helper()
	task, err := ctr.NewTask(ctx, ioc, opts...)
	if err != nil {
		t.Fatalf("new task %s: %v", ctr.ID(), err)
	}
	return task, startProc(t, ctx, "task "+ctr.ID(), task)
}

// startProc subscribes to a created process's exit and starts it; what names it in
// failures.
func startProc(t *testing.T, ctx context.Context, what string, p containerd.Process) <-chan containerd.ExitStatus {
	t.Helper()
	statusC, err := p.Wait(ctx)
	if err != nil {
		t.Fatalf("wait %s: %v", what, err)
	}
	if err := p.Start(ctx); err != nil {
		t.Fatalf("start %s: %v", what, err)
	}
	return statusC
}

// execSpec returns the container's process spec with other arguments.
func execSpec(t *testing.T, ctx context.Context, task containerd.Task, args ...string) *specs.Process {
	t.Helper()
	spec, err := task.Spec(ctx)
	if err != nil {
		t.Fatalf("spec of %s: %v", task.ID(), err)
	}
	p := *spec.Process
	p.Args = args
	p.Terminal = false
	return &p
}

// runExec runs args as exec execID of task without IO and returns its exit status.
func runExec(t *testing.T, ctx context.Context, task containerd.Task, execID string, args ...string) uint32 {
	t.Helper()
	proc, err := task.Exec(ctx, execID, execSpec(t, ctx, task, args...), cio.NullIO)
	if err != nil {
		t.Fatalf("exec %s: %v", execID, err)
	}
	code := exitCode(t, ctx, startProc(t, ctx, "exec "+execID, proc))
	if _, err := proc.Delete(ctx); err != nil {
		t.Errorf("exec %s delete: %v", execID, err)
	}
	return code
}

// waitFor polls cond every 20 ms until it holds, failing the test after timeout.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	if !eventually(timeout, cond) {
		t.Fatalf("%s: not within %v", what, timeout)
	}
}

// eventually polls cond every 20 ms until it holds (true) or timeout passes (false).
func eventually(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
	return true
}

// expectRunning fails the test unless the task reports RUNNING.
func expectRunning(t *testing.T, ctx context.Context, task containerd.Task, when string) {
	t.Helper()
	st, err := task.Status(ctx)
	if err != nil || st.Status != containerd.Running {
		t.Errorf("task %s %s: status %q err %v, want running", task.ID(), when, st.Status, err)
	}
}

// ctrOK runs ctr and fails the test unless it exits 0; it returns ctr's stdout.
func ctrOK(t *testing.T, ctx context.Context, d *harness.Daemon, args ...string) string {
	t.Helper()
	out, stderr, code, err := d.Ctr(ctx, args...)
	if err != nil || code != 0 {
		t.Fatalf("ctr %s: code %d err %v stderr %q", strings.Join(args, " "), code, err, stderr)
	}
	return out
}

// loopArgs is a container command that runs until killed.
var loopArgs = []string{"sh", "-c", "while :; do sleep 0.2; done"}
