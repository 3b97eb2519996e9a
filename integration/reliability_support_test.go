package integration

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	apievents "github.com/containerd/containerd/api/events"
	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/containers"
	"github.com/containerd/containerd/v2/pkg/oci"
	"github.com/containerd/typeurl/v2"

	"github.com/example/containerd-shim-example-v2/integration/harness"
)

// Helpers of the reliability and security scenarios (churn, crash, restart, stall,
// runtime failures, bad input, security).

// envInt reads a positive integer knob from the environment (long modes), else def.
func envInt(t *testing.T, name string, def int) int {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		t.Fatalf("%s=%q: want a positive integer", name, v)
	}
	return n
}

// groupAnnotation is a spec option putting a container into the runtime's own shim group.
func groupAnnotation(group string) oci.SpecOpts {
	return oci.WithAnnotations(map[string]string{ownGroupAnnotation(): group})
}

// shimPidFor returns the PID of the shim daemon serving task ns/id: <bundle>/shim.pid for
// the shim under test; for the stock shim (which writes none) the one shim process started
// with -id first (the group's first container).
func shimPidFor(t *testing.T, d *harness.Daemon, ns, id, first string) int {
	t.Helper()
	pid, err := d.ShimPidOf(ns, id)
	if err == nil {
		return pid
	}
	if harness.Runtime() == harness.DefaultRuntime {
		t.Fatalf("shim pid of %s: %v", id, err)
	}
	return onlyShim(t, d, ns, first).Pid
}

// newContainerErr is newContainer for goroutines: it returns errors instead of failing.
func newContainerErr(ctx context.Context, d *harness.Daemon, img containerd.Image, id string, args []string, extra ...oci.SpecOpts) (containerd.Container, error) {
	return newContainerWithOptions(ctx, d, img, id, args, nil, extra...)
}

// newContainerWithOptions is newContainerErr with the container's runtime options
// (containerd hands them to the shim's Create when the task has none of its own).
func newContainerWithOptions(ctx context.Context, d *harness.Daemon, img containerd.Image, id string, args []string, runtimeOpts any, extra ...oci.SpecOpts) (containerd.Container, error) {
	specOpts := append([]oci.SpecOpts{oci.WithImageConfig(img), oci.WithProcessArgs(args...)}, extra...)
	if harness.CrunUnderTest() {
		specOpts = append(specOpts, withCrunReadableSpec)
	}
	ctr, err := d.Client().NewContainer(ctx, id,
		containerd.WithImage(img),
		containerd.WithNewSnapshot(id+"-rootfs", img),
		containerd.WithRuntime(harness.Runtime(), runtimeOpts),
		containerd.WithNewSpec(specOpts...),
	)
	if err != nil {
		return nil, fmt.Errorf("new container %s: %w", id, err)
	}
	return ctr, nil
}

// withCrunReadableSpec gives a spec the version containerd 1.6 writes (1.0.2-dev):
// crun 1.8 refuses the one the 2.x Go client writes (1.3.0, "unknown version
// specified"). The shims read the spec alike whatever its version.
func withCrunReadableSpec(_ context.Context, _ oci.Client, _ *containers.Container, s *oci.Spec) error {
	s.Version = "1.0.2-dev"
	return nil
}

// exitRecord is one /tasks/exit event as a counter saw it.
type exitRecord struct {
	ExecID string // "" for the init (event ID == container id)
	Pid    uint32
	Status uint32
	At     time.Time
}

// exitCounter counts the /tasks/exit events of one namespace per container, in the
// background, from the moment newExitCounter returns.
type exitCounter struct {
	mu    sync.Mutex
	exits map[string][]exitRecord // container id -> exits in arrival order
	errs  []string
	cond  chan struct{} // pinged on every event
}

// newExitCounter subscribes to /tasks/exit of namespace ns (proven live before it
// returns); the subscription ends with ctx.
func newExitCounter(t *testing.T, ctx context.Context, d *harness.Daemon, ns string) *exitCounter {
	t.Helper()
	s := subscribeTaskEvents(t, ctx, d, ns)
	ec := &exitCounter{exits: map[string][]exitRecord{}, cond: make(chan struct{}, 1)}
	go func() {
		for {
			select {
			case env := <-s.envC:
				if env.Topic != "/tasks/exit" {
					continue
				}
				v, err := typeurl.UnmarshalAny(env.Event)
				e, ok := v.(*apievents.TaskExit)
				ec.mu.Lock()
				if err != nil || !ok {
					ec.errs = append(ec.errs, fmt.Sprintf("/tasks/exit: undecodable %s (%v)", env.Event.GetTypeUrl(), err))
				} else {
					r := exitRecord{Pid: e.Pid, Status: e.ExitStatus, At: e.ExitedAt.AsTime()}
					if e.ID != e.ContainerID {
						r.ExecID = e.ID
					}
					ec.exits[e.ContainerID] = append(ec.exits[e.ContainerID], r)
				}
				ec.mu.Unlock()
				select {
				case ec.cond <- struct{}{}:
				default:
				}
			case err := <-s.errC:
				if ctx.Err() == nil {
					ec.mu.Lock()
					ec.errs = append(ec.errs, fmt.Sprintf("subscription failed: %v", err))
					ec.mu.Unlock()
				}
				return
			case <-ctx.Done():
				return
			}
		}
	}()
	return ec
}

// of returns the exits seen so far for container id.
func (ec *exitCounter) of(id string) []exitRecord {
	ec.mu.Lock()
	defer ec.mu.Unlock()
	return append([]exitRecord(nil), ec.exits[id]...)
}

// waitFor waits until cond holds over the exits seen (checked on every event), or timeout.
func (ec *exitCounter) waitFor(timeout time.Duration, cond func(map[string][]exitRecord) bool) bool {
	deadline := time.After(timeout)
	for {
		ec.mu.Lock()
		ok := cond(ec.exits)
		ec.mu.Unlock()
		if ok {
			return true
		}
		select {
		case <-ec.cond:
		case <-time.After(200 * time.Millisecond):
		case <-deadline:
			return false
		}
	}
}

// problems returns what went wrong in the subscription itself.
func (ec *exitCounter) problems() []string {
	ec.mu.Lock()
	defer ec.mu.Unlock()
	return append([]string(nil), ec.errs...)
}

// errorList collects errors from goroutines, for one report at the end.
type errorList struct {
	mu   sync.Mutex
	errs []string
}

func (l *errorList) add(format string, a ...any) {
	l.mu.Lock()
	l.errs = append(l.errs, fmt.Sprintf(format, a...))
	l.mu.Unlock()
}

func (l *errorList) report(t *testing.T, what string) {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.errs) == 0 {
		return
	}
	shown := l.errs
	if len(shown) > 15 {
		shown = shown[:15]
	}
	t.Errorf("%s: %d errors, first %d:\n  %s", what, len(l.errs), len(shown), strings.Join(shown, "\n  "))
}

// zombieParents is the set of processes whose zombie children would be leaks: the test
// process, the daemon, and every shim of the daemon.
func zombieParents(d *harness.Daemon) map[int]bool {
	parents := map[int]bool{os.Getpid(): true, d.Pid(): true}
	for _, p := range d.ShimProcesses("", "") {
		parents[p.Pid] = true
	}
	return parents
}

// expectNoZombies waits (briefly: an exit is reaped within milliseconds) until no zombie
// has a parent in zombieParents, failing the test otherwise.
func expectNoZombies(t *testing.T, d *harness.Daemon, when string) {
	t.Helper()
	var z []harness.ProcStat
	deadline := time.Now().Add(5 * time.Second)
	for {
		z = harness.ZombiesOf(zombieParents(d))
		if len(z) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("%s: %d zombie processes of the test, the daemon or a shim: %v", when, len(z), z)
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// socketsLeft returns those of the socket paths that still exist.
func socketsLeft(paths map[string]bool) []string {
	var out []string
	for p := range paths {
		if _, err := os.Lstat(p); err == nil {
			out = append(out, p)
		}
	}
	return out
}

// eventRecorder records every /tasks/ event of a namespace from the moment the subscription
// is established on the daemon, including events that arrive before the subscription is
// proven live (unlike subscribeTaskEvents, which wants nothing before its sync event).
type eventRecorder struct {
	mu     sync.Mutex
	events []taskEvent
	errs   []string
	ping   chan struct{}
}

func recordTaskEvents(t *testing.T, ctx context.Context, d *harness.Daemon, ns string) *eventRecorder {
	t.Helper()
	c := d.Client()
	envC, errC := c.EventService().Subscribe(ctx,
		fmt.Sprintf(`namespace==%q,topic~="/tasks/"`, ns),
		fmt.Sprintf(`namespace==%q,topic==%q`, ns, syncTopic))
	r := &eventRecorder{ping: make(chan struct{}, 1)}
	synced := make(chan struct{})
	go func() {
		once := sync.Once{}
		for {
			select {
			case env := <-envC:
				if env.Topic == syncTopic {
					once.Do(func() { close(synced) })
					continue
				}
				v, err := typeurl.UnmarshalAny(env.Event)
				r.mu.Lock()
				if err != nil {
					r.errs = append(r.errs, fmt.Sprintf("%s: decode: %v", env.Topic, err))
				} else {
					r.events = append(r.events, taskEvent{Topic: env.Topic, Event: v})
				}
				r.mu.Unlock()
				select {
				case r.ping <- struct{}{}:
				default:
				}
			case err := <-errC:
				if ctx.Err() == nil {
					r.mu.Lock()
					r.errs = append(r.errs, fmt.Sprintf("subscription: %v", err))
					r.mu.Unlock()
				}
				return
			case <-ctx.Done():
				return
			}
		}
	}()
	deadline := time.After(10 * time.Second)
	for {
		if err := c.EventService().Publish(ctx, syncTopic, &apievents.ContainerUpdate{ID: "sync"}); err != nil {
			t.Fatalf("publish sync event: %v", err)
		}
		select {
		case <-synced:
			return r
		case <-time.After(200 * time.Millisecond):
		case <-deadline:
			t.Fatalf("event subscription not live within 10s (%v)", r.problems())
		}
	}
}

// waitFor waits until cond holds over the events recorded so far, or timeout.
func (r *eventRecorder) waitFor(timeout time.Duration, cond func([]taskEvent) bool) bool {
	deadline := time.After(timeout)
	for {
		r.mu.Lock()
		ok := cond(r.events)
		r.mu.Unlock()
		if ok {
			return true
		}
		select {
		case <-r.ping:
		case <-time.After(100 * time.Millisecond):
		case <-deadline:
			return false
		}
	}
}

func (r *eventRecorder) all() []taskEvent {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]taskEvent(nil), r.events...)
}

func (r *eventRecorder) problems() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.errs...)
}
