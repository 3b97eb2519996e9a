package direct

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	_ "github.com/containerd/containerd/api/events" // registers the event payload types for UnmarshalNew
	eventsapi "github.com/containerd/containerd/api/services/ttrpc/events/v1"
	"github.com/containerd/ttrpc"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/emptypb"
)

// grpcSocketName is the file name of the fake containerd's (never served)
// gRPC address, inside its directory.
const grpcSocketName = "containerd.sock"

// Event is one envelope the shim forwarded, decoded.
type Event struct {
	Namespace string
	Topic     string
	Timestamp time.Time
	TypeURL   string
	Payload   proto.Message // nil when the type is unknown or did not decode
	DecodeErr error
}

func (e Event) String() string { return fmt.Sprintf("%s %v", e.Topic, e.Payload) }

// Containerd stands in for containerd towards one shim: the addresses the
// shim is given, and the events endpoint (containerd.services.events.ttrpc.v1.
// Events/Forward on TTRPC_ADDRESS) that records every envelope in arrival
// order. Nothing listens on GRPCAddress: the shim only uses it to name its
// socket.
type Containerd struct {
	Dir          string
	GRPCAddress  string
	TTRPCAddress string
	Binary       string // what -publish-binary names (never run)

	srv *ttrpc.Server
	l   net.Listener

	mu     sync.Mutex
	cond   *sync.Cond
	events []Event
}

// NewContainerd starts the fake in a short directory of its own (socket paths
// are limited to 108 bytes, and t.TempDir() paths carry the test's name).
// t.Cleanup stops it.
func NewContainerd(t testing.TB) *Containerd {
	t.Helper()
	dir, err := os.MkdirTemp("", "exd-")
	if err != nil {
		t.Fatal(err)
	}
	if err := markOwned(dir); err != nil {
		t.Fatal(err)
	}
	c := &Containerd{
		Dir:         dir,
		GRPCAddress: filepath.Join(dir, grpcSocketName),
		Binary:      "/usr/bin/containerd",
	}
	c.TTRPCAddress = c.GRPCAddress + ".ttrpc"
	c.cond = sync.NewCond(&c.mu)
	// The same peer check as containerd's own ttrpc server.
	c.srv, err = ttrpc.NewServer(ttrpc.WithServerHandshaker(ttrpc.UnixSocketRequireSameUser()))
	if err != nil {
		t.Fatal(err)
	}
	eventsapi.RegisterEventsService(c.srv, forwarder{c})
	c.l, err = net.Listen("unix", c.TTRPCAddress)
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = c.srv.Serve(context.Background(), c.l) }()
	t.Cleanup(func() {
		_ = c.srv.Close()
		os.RemoveAll(dir)
	})
	return c
}

type forwarder struct{ c *Containerd }

// Forward records an envelope without judging it: the tests check its fields
// (CheckEnvelopes), where a failure can name the bad event.
func (f forwarder) Forward(ctx context.Context, r *eventsapi.ForwardRequest) (*emptypb.Empty, error) {
	env := r.GetEnvelope()
	if env == nil {
		return nil, fmt.Errorf("forward without envelope")
	}
	e := Event{Namespace: env.GetNamespace(), Topic: env.GetTopic()}
	if ts := env.GetTimestamp(); ts != nil {
		e.Timestamp = ts.AsTime()
	}
	if a := env.GetEvent(); a != nil {
		e.TypeURL = a.GetTypeUrl()
		e.Payload, e.DecodeErr = a.UnmarshalNew()
	}
	f.c.mu.Lock()
	f.c.events = append(f.c.events, e)
	f.c.cond.Broadcast()
	f.c.mu.Unlock()
	return &emptypb.Empty{}, nil
}

// Events returns what was forwarded so far, in order.
func (c *Containerd) Events() []Event {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]Event(nil), c.events...)
}

// Topics returns the topics forwarded so far, in order.
func (c *Containerd) Topics() []string {
	var topics []string
	for _, e := range c.Events() {
		topics = append(topics, e.Topic)
	}
	return topics
}

// WaitEvents waits until done holds for the events forwarded so far, and
// returns them; the test fails (with the events seen) after timeout.
func (c *Containerd) WaitEvents(t testing.TB, timeout time.Duration, what string, done func([]Event) bool) []Event {
	t.Helper()
	deadline := time.Now().Add(timeout)
	// sync.Cond has no deadline: a timer wakes the waiter to look at the clock.
	timer := time.AfterFunc(timeout, func() {
		c.mu.Lock()
		c.cond.Broadcast()
		c.mu.Unlock()
	})
	defer timer.Stop()
	c.mu.Lock()
	defer c.mu.Unlock()
	for !done(c.events) {
		if time.Now().After(deadline) {
			t.Fatalf("no %s within %v; events: %s", what, timeout, describeEvents(c.events))
		}
		c.cond.Wait()
	}
	return append([]Event(nil), c.events...)
}

// WaitTopic waits for the n-th event of a topic (n counts from 1).
func (c *Containerd) WaitTopic(t testing.TB, timeout time.Duration, topic string, n int) []Event {
	t.Helper()
	return c.WaitEvents(t, timeout, fmt.Sprintf("event %d of %s", n, topic), func(evs []Event) bool {
		return CountTopic(evs, topic) >= n
	})
}

// CountTopic counts the events of a topic.
func CountTopic(evs []Event, topic string) int {
	n := 0
	for _, e := range evs {
		if e.Topic == topic {
			n++
		}
	}
	return n
}

func describeEvents(evs []Event) string {
	var b strings.Builder
	b.WriteString("[")
	for i, e := range evs {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(e.String())
	}
	b.WriteString("]")
	return b.String()
}

// payloadTypes maps each task topic to the type containerd expects in it.
var payloadTypes = map[string]string{
	"/tasks/create":       "containerd.events.TaskCreate",
	"/tasks/start":        "containerd.events.TaskStart",
	"/tasks/exit":         "containerd.events.TaskExit",
	"/tasks/delete":       "containerd.events.TaskDelete",
	"/tasks/exec-added":   "containerd.events.TaskExecAdded",
	"/tasks/exec-started": "containerd.events.TaskExecStarted",
	"/tasks/paused":       "containerd.events.TaskPaused",
	"/tasks/resumed":      "containerd.events.TaskResumed",
	"/tasks/oom":          "containerd.events.TaskOOM",
	"/tasks/checkpointed": "containerd.events.TaskCheckpointed",
}

// CheckEnvelopes checks what containerd validates or relies on in every
// envelope (PROTOCOL.md §4.1, §4.2): the shim's namespace, a known topic, a
// creation time, and a payload of the topic's type under its bare type URL.
func CheckEnvelopes(t testing.TB, evs []Event, namespace string) {
	t.Helper()
	for i, e := range evs {
		if e.Namespace != namespace {
			t.Errorf("event %d (%s): namespace %q, want %q", i, e.Topic, e.Namespace, namespace)
		}
		if e.Timestamp.IsZero() || e.Timestamp.Unix() <= 0 {
			t.Errorf("event %d (%s): no timestamp (containerd refuses a zero one)", i, e.Topic)
		}
		want, ok := payloadTypes[e.Topic]
		if !ok {
			t.Errorf("event %d: unknown topic %q", i, e.Topic)
			continue
		}
		if e.TypeURL != want {
			t.Errorf("event %d (%s): type URL %q, want %q", i, e.Topic, e.TypeURL, want)
		}
		if e.DecodeErr != nil || e.Payload == nil {
			t.Errorf("event %d (%s): payload does not decode: %v", i, e.Topic, e.DecodeErr)
		}
	}
}
