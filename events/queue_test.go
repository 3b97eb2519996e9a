package events

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	apievents "github.com/containerd/containerd/api/events"
	eventsapi "github.com/containerd/containerd/api/services/ttrpc/events/v1"
	"github.com/containerd/containerd/api/types"
	"github.com/containerd/ttrpc"
	"github.com/example/containerd-shim-example-v2/internal/ttrpcclient"
	"github.com/example/containerd-shim-example-v2/internal/ttrpcframe"
	shimevents "github.com/example/containerd-shim-example-v2/proto/api/events"
	shimtypes "github.com/example/containerd-shim-example-v2/proto/api/types"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// flaky fails the first failures calls, then records what it gets.
type flaky struct {
	mu       sync.Mutex
	failures int
	got      []string
}

func (f *flaky) Forward(ctx context.Context, env *shimtypes.Envelope) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failures > 0 {
		f.failures--
		return &net.OpError{Op: "dial", Err: errors.New("connection refused")}
	}
	var e apievents.TaskExit
	if err := proto.Unmarshal(env.Event.Value, &e); err != nil {
		return err
	}
	f.got = append(f.got, env.Topic+":"+e.ID)
	return nil
}
func (f *flaky) Close() error { return nil }

func TestQueueKeepsOrderAcrossFailures(t *testing.T) {
	f := &flaky{failures: 3}
	q := NewQueue("ns", f)
	go q.Run()
	defer q.Close()
	want := []string{}
	for _, id := range []string{"a", "b", "c", "d"} {
		q.Publish("/tasks/exit", &shimevents.TaskExit{ID: id})
		want = append(want, "/tasks/exit:"+id)
	}
	if st := q.Stats(); st.Pending == 0 || st.OldestPending <= 0 {
		// The forwards are still failing (retries start retryMin apart), so the
		// head waits and has an age.
		t.Errorf("stats while containerd refuses: %+v, want pending events with an age", st)
	}
	if !q.Flush(10 * time.Second) {
		t.Fatal("queue did not drain")
	}
	if st := q.Stats(); st != (Stats{Forwarded: 4, Retries: 3}) {
		t.Errorf("stats after draining: %+v, want 4 forwarded after 3 retries, nothing pending or dropped", st)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.got) != len(want) {
		t.Fatalf("got %v, want %v", f.got, want)
	}
	for i := range want {
		if f.got[i] != want[i] {
			t.Fatalf("got %v, want %v", f.got, want)
		}
	}
}

type recorder struct {
	mu   sync.Mutex
	envs []*types.Envelope
}

func (r *recorder) Forward(ctx context.Context, req *eventsapi.ForwardRequest) (*emptypb.Empty, error) {
	r.mu.Lock()
	r.envs = append(r.envs, req.Envelope)
	r.mu.Unlock()
	return &emptypb.Empty{}, nil
}

// serve runs svc as containerd's events service on a unix socket at path;
// the returned func stops it.
func serve(t *testing.T, path string, svc eventsapi.TTRPCEventsService) func() {
	t.Helper()
	srv, err := ttrpc.NewServer()
	if err != nil {
		t.Fatal(err)
	}
	eventsapi.RegisterTTRPCEventsService(srv, svc)
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(context.Background(), l)
	return func() { srv.Close() }
}

// Events published while containerd is away arrive, in order, once it is
// back; envelopes carry namespace, topic, type URL and a creation timestamp.
func TestTTRPCForwarderDeliversAfterContainerdReturns(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.sock.ttrpc")
	q := NewQueue("ns1", NewTTRPCForwarder("unix://"+path))
	go q.Run()
	defer q.Close()

	before := time.Now()
	q.Publish("/tasks/start", &shimevents.TaskStart{ContainerID: "c1", Pid: 7})
	q.Publish("/tasks/exit", &shimevents.TaskExit{ContainerID: "c1", ID: "c1", Pid: 7, ExitStatus: 3})
	time.Sleep(200 * time.Millisecond) // nobody listens yet: attempts fail

	rec := &recorder{}
	stop := serve(t, path, rec)
	defer stop()
	if !q.Flush(10 * time.Second) {
		t.Fatal("events not delivered after containerd came back")
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.envs) != 2 || rec.envs[0].Topic != "/tasks/start" || rec.envs[1].Topic != "/tasks/exit" {
		t.Fatalf("got %v", rec.envs)
	}
	e := rec.envs[1]
	if e.Namespace != "ns1" || e.Event.TypeUrl != "containerd.events.TaskExit" {
		t.Fatalf("envelope %v", e)
	}
	if ts := e.Timestamp.AsTime(); ts.Before(before) || ts.After(time.Now()) {
		t.Fatalf("timestamp %v is not the creation time", ts)
	}
}

// An upgrade holds the queue, takes its undelivered events over to a new
// queue (the next binary's), which delivers them first, in order, once each.
func TestHeldQueueHandedOver(t *testing.T) {
	old := &flaky{}
	q := NewQueue("ns", old)
	go q.Run()
	q.Publish("/tasks/exit", &shimevents.TaskExit{ID: "a"})
	if !q.Flush(5 * time.Second) {
		t.Fatal("first event not delivered")
	}
	if !q.Hold(time.Second) {
		t.Fatal("hold did not complete")
	}
	q.Publish("/tasks/exit", &shimevents.TaskExit{ID: "b"})
	q.Publish("/tasks/exit", &shimevents.TaskExit{ID: "c"})
	time.Sleep(50 * time.Millisecond)
	st, err := q.Export()
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Pending) != 2 || st.Forwarded != 1 {
		t.Fatalf("exported %d pending, %d forwarded; want 2 and 1", len(st.Pending), st.Forwarded)
	}

	next := &flaky{}
	q2 := NewQueue("ns", next)
	q2.Publish("/tasks/exit", &shimevents.TaskExit{ID: "d"}) // an exit the successor saw first
	if err := q2.Import(st); err != nil {
		t.Fatal(err)
	}
	go q2.Run()
	defer q2.Close()
	if !q2.Flush(5 * time.Second) {
		t.Fatal("successor did not drain")
	}
	next.mu.Lock()
	got := append([]string(nil), next.got...)
	next.mu.Unlock()
	want := []string{"/tasks/exit:b", "/tasks/exit:c", "/tasks/exit:d"}
	if len(got) != len(want) || got[0] != want[0] || got[1] != want[1] || got[2] != want[2] {
		t.Fatalf("successor delivered %v, want %v", got, want)
	}
	if s := q2.Stats(); s.Forwarded != 4 {
		t.Errorf("successor counts %d forwarded, want 4 (1 before, 3 after)", s.Forwarded)
	}
	old.mu.Lock()
	defer old.mu.Unlock()
	if len(old.got) != 1 {
		t.Fatalf("held queue delivered %v", old.got)
	}
}

// stuck holds every Forward until its release channel closes, then fails it
// as a broken connection would.
type stuck struct {
	entered chan struct{} // one value per call that has begun
	release chan struct{}
	mu      sync.Mutex
	got     int
}

func (s *stuck) Forward(ctx context.Context, env *shimtypes.Envelope) error {
	s.entered <- struct{}{}
	<-s.release
	s.mu.Lock()
	s.got++
	s.mu.Unlock()
	return &net.OpError{Op: "write", Err: errors.New("broken pipe")}
}
func (s *stuck) Close() error { return nil }

// An upgrade's Hold waits for the send under way; a send that fails must
// end that wait as one that succeeds does, not leave it to its timeout
// (everything else of the daemon is paused meanwhile).
func TestHoldEndsWithAFailedSend(t *testing.T) {
	f := &stuck{entered: make(chan struct{}, 8), release: make(chan struct{})}
	q := NewQueue("ns", f)
	go q.Run()
	defer q.Close()
	q.Publish("/tasks/exit", &shimevents.TaskExit{ID: "a"})
	<-f.entered
	held := make(chan bool, 1)
	t0 := time.Now()
	go func() { held <- q.Hold(5 * time.Second) }()
	time.Sleep(50 * time.Millisecond)
	close(f.release)
	if !<-held {
		t.Fatal("Hold failed")
	}
	if d := time.Since(t0); d > 2*time.Second {
		t.Errorf("Hold returned %v after the send had failed; it waited for its timeout", d)
	}
}

// Close abandons what is queued: a held queue's events are an upgrade's
// successor's to send, and none may go out twice.
func TestCloseAbandonsHeldEvents(t *testing.T) {
	f := &flaky{}
	q := NewQueue("ns", f)
	go q.Run()
	if !q.Hold(time.Second) {
		t.Fatal("Hold failed")
	}
	q.Publish("/tasks/exit", &shimevents.TaskExit{ID: "a"})
	q.Publish("/tasks/exit", &shimevents.TaskExit{ID: "b"})
	q.Close()
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.got) != 0 {
		t.Fatalf("a closed, held queue forwarded %v", f.got)
	}
}

// A queue whose Run never started (a daemon failing before it serves)
// closes without waiting for it.
func TestCloseWithoutRun(t *testing.T) {
	q := NewQueue("ns", &flaky{})
	closed := make(chan struct{})
	go func() { q.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("Close waits for a Run that never started")
	}
	q.Run() // started late, it ends at once
}

// refuser answers every Forward with an error, and records whether the call
// carried a deadline (ttrpc's server derives it from the request's timeout).
type refuser struct {
	mu       sync.Mutex
	calls    int
	deadline bool
}

func (r *refuser) Forward(ctx context.Context, req *eventsapi.ForwardRequest) (*emptypb.Empty, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls++
	_, r.deadline = ctx.Deadline()
	return nil, status.Errorf(codes.FailedPrecondition, "refused %s", req.Envelope.Topic)
}

// containerd's refusal comes back as its status, over the same connection,
// and counts as a rejection (not a transport failure); the request carries
// the call's deadline.
func TestTTRPCForwarderRejection(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.sock.ttrpc")
	ref := &refuser{}
	defer serve(t, path, ref)()

	f := NewTTRPCForwarder("unix://" + path)
	defer f.Close()
	for i := 0; i < 2; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := f.Forward(ctx, &shimtypes.Envelope{Topic: "/tasks/exit", Namespace: "ns"})
		cancel()
		if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "refused /tasks/exit") {
			t.Fatalf("Forward = %v, want containerd's FailedPrecondition", err)
		}
		if !IsRejection(err) {
			t.Fatalf("IsRejection(%v) = false", err)
		}
		if f.conn == nil {
			t.Fatal("a rejection closed the connection")
		}
	}
	ref.mu.Lock()
	defer ref.mu.Unlock()
	if ref.calls != 2 || !ref.deadline {
		t.Fatalf("containerd saw %d calls (deadline %v), want 2 with a deadline", ref.calls, ref.deadline)
	}
}

// A containerd that takes the request but does not answer: the call ends at
// its deadline as a transport failure (the queue tries again), the
// connection is kept and the next try of the same event sends nothing again,
// since containerd may still carry out the first; another event is sent on
// a new connection.
func TestTTRPCForwarderSilentPeer(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.sock.ttrpc")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	accepted := make(chan net.Conn, 2)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
	f := NewTTRPCForwarder("unix://" + path)
	defer f.Close()
	forward := func(env *shimtypes.Envelope) error {
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		return f.Forward(ctx, env)
	}
	env := &shimtypes.Envelope{Topic: "/tasks/exit"}
	for try := 1; try <= 2; try++ {
		if err := forward(env); err == nil || IsRejection(err) {
			t.Fatalf("try %d: Forward to a silent peer = %v, want a transport failure", try, err)
		}
		if f.conn == nil {
			t.Fatalf("try %d: the connection holding the request was dropped", try)
		}
	}
	peer := <-accepted
	defer peer.Close()
	// Whatever the tries wrote is in the socket by now: one request, once.
	got := make([]byte, 64<<10)
	_ = peer.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	n, _ := io.ReadAtLeast(peer, got, 1)
	_ = peer.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	for {
		m, err := peer.Read(got[n:])
		n += m
		if err != nil {
			break
		}
	}
	if frames := countFrames(t, got[:n]); frames != 1 {
		t.Fatalf("the silent peer received %d requests, want the event once", frames)
	}
	if err := forward(&shimtypes.Envelope{Topic: "/tasks/delete"}); err == nil || IsRejection(err) {
		t.Fatalf("Forward of the next event = %v, want a transport failure", err)
	}
	select {
	case c := <-accepted:
		c.Close()
	case <-time.After(5 * time.Second):
		t.Fatal("another event was not sent on a new connection")
	}
}

// countFrames counts the ttrpc frames in b, which must hold whole frames.
func countFrames(t *testing.T, b []byte) int {
	t.Helper()
	frames := 0
	for len(b) > 0 {
		if len(b) < ttrpcframe.HeaderLen {
			t.Fatalf("%d bytes left: not a whole frame header", len(b))
		}
		h := ttrpcframe.Parse(b[:ttrpcframe.HeaderLen])
		if len(b) < ttrpcframe.HeaderLen+int(h.Length) {
			t.Fatalf("frame of %d bytes cut short", h.Length)
		}
		b = b[ttrpcframe.HeaderLen+int(h.Length):]
		frames++
	}
	return frames
}

// Stream ids never wrap around on one connection: a connection whose ids
// are used up is replaced by a new one before the next event.
func TestTTRPCForwarderRedialsBeforeStreamIDsWrap(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.sock.ttrpc")
	rec := &recorder{}
	stop := serve(t, path, rec)
	defer stop()
	f := NewTTRPCForwarder("unix://" + path)
	defer f.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	raw, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	spent := ttrpcclient.NewAt(raw, 1<<31+1) // past the last stream id
	f.conn = spent
	if err := f.Forward(ctx, &shimtypes.Envelope{Topic: "/b"}); err != nil {
		t.Fatalf("Forward on a connection with its stream ids used up: %v", err)
	}
	if f.conn == spent || f.conn == nil {
		t.Fatal("the spent connection was kept")
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.envs) != 1 || rec.envs[0].Topic != "/b" {
		t.Fatalf("containerd received %v, want the one event", rec.envs)
	}
}

// lateFirst is containerd's events service answering its first call only
// once released (too busy, or stopped, to answer within the deadline); it
// records each event it carries out, and says when the first one is done.
type lateFirst struct {
	release, firstDone chan struct{}
	mu                 sync.Mutex
	calls              int
	topics             []string
}

func (s *lateFirst) Forward(ctx context.Context, req *eventsapi.ForwardRequest) (*emptypb.Empty, error) {
	s.mu.Lock()
	s.calls++
	first := s.calls == 1
	s.mu.Unlock()
	if first {
		<-s.release
		defer close(s.firstDone)
	}
	s.mu.Lock()
	s.topics = append(s.topics, req.Envelope.Topic)
	s.mu.Unlock()
	return &emptypb.Empty{}, nil
}

// containerd takes an event but answers after the call's deadline: the
// queue's next try waits for that answer rather than sending the event
// again, so containerd carries it out once, before the next event. (Sent
// again on a new connection, it was carried out twice, the first copy after
// the next event: a /tasks/exit after the task's /tasks/delete.)
func TestTTRPCForwarderWaitsForALateAnswer(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.sock.ttrpc")
	svc := &lateFirst{release: make(chan struct{}), firstDone: make(chan struct{})}
	defer serve(t, path, svc)()
	f := NewTTRPCForwarder("unix://" + path)
	defer f.Close()
	forward := func(env *shimtypes.Envelope, timeout time.Duration) error {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		return f.Forward(ctx, env)
	}
	exit := &shimtypes.Envelope{Namespace: "ns", Topic: "/tasks/exit", Timestamp: timestamppb.Now()}
	del := &shimtypes.Envelope{Namespace: "ns", Topic: "/tasks/delete", Timestamp: timestamppb.Now()}
	if err := forward(exit, 200*time.Millisecond); err == nil || IsRejection(err) {
		t.Fatalf("first try, containerd not answering: %v, want a transport failure", err)
	}
	// The queue tries again while containerd still holds the first call.
	err := forward(exit, 200*time.Millisecond)
	close(svc.release) // containerd gets round to it
	for try := 3; err != nil; try++ {
		if try > 5 {
			t.Fatalf("/tasks/exit not delivered: %v", err)
		}
		err = forward(exit, 5*time.Second)
	}
	if err := forward(del, 5*time.Second); err != nil {
		t.Fatalf("/tasks/delete: %v", err)
	}
	select {
	case <-svc.firstDone:
	case <-time.After(10 * time.Second):
		t.Fatal("containerd never finished the first call")
	}
	svc.mu.Lock()
	defer svc.mu.Unlock()
	if want := []string{"/tasks/exit", "/tasks/delete"}; !slices.Equal(svc.topics, want) {
		t.Fatalf("containerd carried out %v, want %v: each event once, in order", svc.topics, want)
	}
}

// lateAnswer ends its first Forward with the answer still due, and answers
// the next (the wait for that answer) once answer is closed.
type lateAnswer struct {
	answer chan struct{}
	mu     sync.Mutex
	calls  int
}

func (l *lateAnswer) Forward(ctx context.Context, env *shimtypes.Envelope) error {
	l.mu.Lock()
	l.calls++
	first := l.calls == 1
	l.mu.Unlock()
	if first {
		return fmt.Errorf("forward: %w", ttrpcclient.ErrAnswerPending)
	}
	select {
	case <-l.answer:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("forward: %w", ttrpcclient.ErrAnswerPending)
	}
}
func (l *lateAnswer) Close() error { return nil }

// queueWithAnswerDue returns a running queue (closed at the test's end)
// whose one event was sent and whose answer is due until f.answer closes.
func queueWithAnswerDue(t *testing.T) (*Queue, *lateAnswer) {
	f := &lateAnswer{answer: make(chan struct{})}
	q := NewQueue("ns", f)
	go q.Run()
	t.Cleanup(q.Close)
	q.Publish("/tasks/exit", &shimevents.TaskExit{ID: "a"})
	f.sent(t)
	return q, f
}

// sent waits until the first Forward has returned with the answer due.
func (l *lateAnswer) sent(t *testing.T) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
		l.mu.Lock()
		n := l.calls
		l.mu.Unlock()
		if n > 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the queue never forwarded the event")
		}
	}
}

// An event containerd has but has not answered yet is in flight for an
// upgrade's Hold: Hold waits for its answer, and the event is not handed
// over, since the successor would send it again and containerd, which
// carries it out anyway, would get it twice.
func TestHoldWaitsForALateAnswer(t *testing.T) {
	q, f := queueWithAnswerDue(t)
	held := make(chan bool, 1)
	go func() { held <- q.Hold(5 * time.Second) }()
	select {
	case <-held:
		t.Fatal("Hold returned while the event's answer was still due")
	case <-time.After(100 * time.Millisecond):
	}
	close(f.answer)
	if !<-held {
		t.Fatal("Hold failed")
	}
	st, err := q.Export()
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Pending) != 0 {
		t.Errorf("%d event(s) handed over whose answer came during the Hold; the successor would send them again", len(st.Pending))
	}
}

// An answer that does not come within the Hold's time fails the Hold (the
// upgrade is refused, to be tried again) rather than hand the event over.
func TestHoldFailsWhileAnAnswerStaysDue(t *testing.T) {
	q, f := queueWithAnswerDue(t)
	if q.Hold(200 * time.Millisecond) {
		t.Fatal("Hold succeeded with the event's answer still due")
	}
	close(f.answer)
	if !q.Flush(5 * time.Second) {
		t.Error("the event was not delivered after the failed Hold")
	}
}
