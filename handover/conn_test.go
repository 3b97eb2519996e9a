package handover

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/containerd/ttrpc"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/example/containerd-shim-example-v2/internal/ttrpcframe"
	"github.com/example/containerd-shim-example-v2/ttrpcserver"
)

// echoServer is one "daemon": a ttrpc server whose Echo answers with its
// own name and the request, after an optional delay; release unblocks a
// request that asks to wait ("wait:...").
type echoServer struct {
	name     string
	srv      server
	ln       *Listener
	conns    *Conns
	release  chan struct{}
	served   chan struct{}
	parkDone chan struct{}
}

// server is what the daemon needs of a ttrpc server. The tests run with
// both ttrpc's own server and the daemon's (ttrpcserver), which read and
// write a connection differently (buffered read-ahead, header then body),
// and the daemon's in both its modes (idle connections in its watcher, told
// Rest and asked Buffered; or a goroutine per connection, always reading).
type server interface {
	RegisterService(string, *ttrpc.ServiceDesc)
	Serve(context.Context, net.Listener) error
	Close() error
}

// serverKind is the server the current test uses (see bothServers).
var serverKind = "ttrpc"

func newServer(t *testing.T, conns *Conns) server {
	t.Helper()
	var noop noHandshake
	switch serverKind {
	case "ttrpcserver":
		return ttrpcserver.New(ttrpcserver.Options{Handshaker: conns.Handshaker(noop)})
	case "ttrpcserver-goroutine-per-conn":
		return ttrpcserver.New(ttrpcserver.Options{Handshaker: conns.Handshaker(noop), GoroutinePerConn: true})
	}
	srv, err := ttrpc.NewServer(ttrpc.WithServerHandshaker(conns.Handshaker(noop)))
	if err != nil {
		t.Fatal(err)
	}
	return srv
}

// bothServers runs a test once with each server (not in parallel: the
// server kind is a package variable).
func bothServers(t *testing.T, test func(*testing.T)) {
	for _, kind := range []string{"ttrpc", "ttrpcserver", "ttrpcserver-goroutine-per-conn"} {
		t.Run(kind, func(t *testing.T) {
			serverKind = kind
			defer func() { serverKind = "ttrpc" }()
			test(t)
		})
	}
}

func startEcho(t *testing.T, name string, ln *Listener) *echoServer {
	t.Helper()
	e := &echoServer{name: name, ln: ln, conns: NewConns(), release: make(chan struct{}), served: make(chan struct{}), parkDone: make(chan struct{})}
	srv := newServer(t, e.conns)
	srv.RegisterService("test.Echo", &ttrpc.ServiceDesc{Methods: map[string]ttrpc.Method{
		"Echo": func(ctx context.Context, unmarshal func(any) error) (any, error) {
			var req wrapperspb.StringValue
			if err := unmarshal(&req); err != nil {
				return nil, err
			}
			if len(req.Value) > 5 && req.Value[:5] == "wait:" {
				close(e.served)
				<-e.release
			}
			return wrapperspb.String(e.name + ":" + req.Value), nil
		},
		// A long poll, like containerd's Wait: answered when parkDone closes.
		"Wait": func(ctx context.Context, unmarshal func(any) error) (any, error) {
			var req wrapperspb.StringValue
			if err := unmarshal(&req); err != nil {
				return nil, err
			}
			<-e.parkDone
			return wrapperspb.String(e.name + ":" + req.Value), nil
		},
	}})
	e.srv = srv
	go srv.Serve(context.Background(), ln)
	return e
}

func listen(t *testing.T) (*net.UnixListener, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "s.sock")
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	return l, path
}

// dial connects a ttrpc client to the test server's socket.
func dial(t *testing.T, path string) *ttrpc.Client {
	t.Helper()
	nc, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	return ttrpc.NewClient(nc)
}

func call(ctx context.Context, c *ttrpc.Client, v string) (string, error) {
	var resp wrapperspb.StringValue
	err := c.Call(ctx, "test.Echo", "Echo", wrapperspb.String(v), &resp)
	return resp.Value, err
}

// The handover of a live connection between two servers, as an upgrade does
// it between two binaries: a request in flight when the pause begins is
// answered by the old server before the pause completes; one sent during the
// pause waits and is answered by the new one; the client never sees an error.
func TestConnHandedOverBetweenServers(t *testing.T) { bothServers(t, testConnHandedOverBetweenServers) }

func testConnHandedOverBetweenServers(t *testing.T) {
	l, path := listen(t)
	old := startEcho(t, "old", NewListener(l, nil))
	defer old.srv.Close()

	client := dial(t, path)
	defer client.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if got, err := call(ctx, client, "a"); err != nil || got != "old:a" {
		t.Fatalf("before: %q, %v", got, err)
	}

	// A request in flight, held by the server until released.
	inflight := make(chan string, 1)
	go func() { v, err := call(ctx, client, "wait:b"); inflight <- v + errString(err) }()
	<-old.served
	if err := old.ln.Pause(time.Second); err != nil {
		t.Fatal(err)
	}
	paused := make(chan error, 1)
	go func() { paused <- old.conns.PauseAll(5 * time.Second) }()
	select {
	case err := <-paused:
		t.Fatalf("pause completed with a request unanswered: %v", err)
	case <-time.After(100 * time.Millisecond):
	}
	close(old.release)
	if err := <-paused; err != nil {
		t.Fatal(err)
	}
	if got := <-inflight; got != "old:wait:b" {
		t.Fatalf("in-flight request: %q", got)
	}

	// Sent during the pause: nobody serves it yet.
	during := make(chan string, 1)
	go func() { v, err := call(ctx, client, "c"); during <- v + errString(err) }()
	time.Sleep(50 * time.Millisecond)
	select {
	case got := <-during:
		t.Fatalf("answered during the pause: %q", got)
	default:
	}

	// The successor: the same sockets, through their descriptor numbers.
	handOver(t, old, func(cst []ConnState) {
		if len(cst) != 1 {
			t.Fatalf("exported %d connections, want 1", len(cst))
		}
	})

	if got := <-during; got != "new:c" {
		t.Fatalf("request sent during the pause: %q, want the successor's answer", got)
	}
	if got, err := call(ctx, client, "d"); err != nil || got != "new:d" {
		t.Fatalf("after: %q, %v", got, err)
	}
	// New clients reach the successor through the handed-over listener.
	client2 := dial(t, path)
	defer client2.Close()
	if got, err := call(ctx, client2, "e"); err != nil || got != "new:e" {
		t.Fatalf("new client: %q, %v", got, err)
	}
}

// A pause that lands in the middle of a request's header: the bytes already
// read go over as the connection's carry, and the successor completes the
// message with the rest.
func TestPartialHeaderIsCarried(t *testing.T) { bothServers(t, testPartialHeaderIsCarried) }

func testPartialHeaderIsCarried(t *testing.T) {
	l, path := listen(t)
	old := startEcho(t, "old", NewListener(l, nil))
	defer old.srv.Close()
	raw, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	frame := requestFrame(t, 1, "x")
	if _, err := raw.Write(frame[:4]); err != nil {
		t.Fatal(err)
	}
	waitRegistered(t, old.conns)
	time.Sleep(50 * time.Millisecond) // the server's reader takes the 4 bytes
	if err := old.ln.Pause(time.Second); err != nil {
		t.Fatal(err)
	}
	if err := old.conns.PauseAll(2 * time.Second); err != nil {
		t.Fatal(err)
	}
	handOver(t, old, func(cst []ConnState) {
		if len(cst) != 1 || len(cst[0].Carry) != 4 {
			t.Fatalf("exported %+v, want one connection carrying the 4 header bytes read", cst)
		}
	})
	if _, err := raw.Write(frame[4:]); err != nil {
		t.Fatal(err)
	}
	got := readResponse(t, raw)
	if got != "new:x" {
		t.Fatalf("answer %q, want new:x", got)
	}
}

// handOver moves old's paused listener and connections to a new server, as an upgrade
// moves them to the next binary; check sees the exported connections first.
func handOver(t *testing.T, old *echoServer, check func([]ConnState)) *echoServer {
	t.Helper()
	var fds FDs
	t.Cleanup(fds.Release)
	lst, err := old.ln.Export(&fds)
	if err != nil {
		t.Fatal(err)
	}
	cst, err := old.conns.ExportAll(&fds)
	if err != nil {
		t.Fatal(err)
	}
	check(cst)
	var carried []net.Conn
	for _, st := range cst {
		c, err := ImportConn(st)
		if err != nil {
			t.Fatal(err)
		}
		carried = append(carried, c)
	}
	ln2, err := ImportListener(*lst, carried)
	if err != nil {
		t.Fatal(err)
	}
	succ := startEcho(t, "new", ln2)
	t.Cleanup(func() { succ.srv.Close() })
	return succ
}

func waitRegistered(t *testing.T, cs *Conns) {
	t.Helper()
	for i := 0; cs.Len() == 0; i++ {
		if i > 200 {
			t.Fatal("connection never registered")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func requestFrame(t *testing.T, stream uint32, v string) []byte {
	t.Helper()
	return methodFrame(t, stream, "Echo", v)
}

func readResponse(t *testing.T, c net.Conn) string {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	var hdr [ttrpcframe.HeaderLen]byte
	if _, err := readFull(c, hdr[:]); err != nil {
		t.Fatalf("response header: %v", err)
	}
	body := make([]byte, binary.BigEndian.Uint32(hdr[:4]))
	if _, err := readFull(c, body); err != nil {
		t.Fatalf("response body: %v", err)
	}
	var resp ttrpc.Response
	if err := proto.Unmarshal(body, &resp); err != nil {
		t.Fatal(err)
	}
	var v wrapperspb.StringValue
	if err := proto.Unmarshal(resp.Payload, &v); err != nil {
		t.Fatal(err)
	}
	return v.Value
}

func readFull(c net.Conn, b []byte) (int, error) {
	n := 0
	for n < len(b) {
		m, err := c.Read(b[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return " error: " + err.Error()
}

type noHandshake struct{}

func (noHandshake) Handshake(_ context.Context, c net.Conn) (net.Conn, any, error) {
	return c, nil, nil
}

// A long poll (Wait) open when the pause begins does not hold the pause: it
// goes over with the connection, and the successor answers it.
func TestParkedWaitAnsweredBySuccessor(t *testing.T) {
	bothServers(t, testParkedWaitAnsweredBySuccessor)
}

func testParkedWaitAnsweredBySuccessor(t *testing.T) {
	l, path := listen(t)
	old := startEcho(t, "old", NewListener(l, nil))
	defer old.srv.Close()
	client := dial(t, path)
	defer client.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	waited := make(chan string, 1)
	go func() {
		var resp wrapperspb.StringValue
		err := client.Call(ctx, "test.Echo", "Wait", wrapperspb.String("w"), &resp)
		waited <- resp.Value + errString(err)
	}()
	waitRegistered(t, old.conns)
	time.Sleep(50 * time.Millisecond) // the Wait is being served
	if err := old.ln.Pause(time.Second); err != nil {
		t.Fatal(err)
	}
	if err := old.conns.PauseAll(2 * time.Second); err != nil {
		t.Fatalf("a parked Wait held the pause: %v", err)
	}
	succ := handOver(t, old, func(cst []ConnState) {
		if len(cst) != 1 || len(cst[0].Carry) == 0 {
			t.Fatalf("exported %+v; want the connection with its Wait", cst)
		}
	})
	close(succ.parkDone)
	if got := <-waited; got != "new:w" {
		t.Fatalf("Wait answered %q, want the successor's new:w", got)
	}
	if got, err := call(ctx, client, "after"); err != nil || got != "new:after" {
		t.Fatalf("after: %q, %v", got, err)
	}
}

// WaitNone reports when every client has hung up (a daemon whose last pod is gone waits for
// it before leaving), and gives up after its timeout while one is connected.
func TestWaitNone(t *testing.T) { bothServers(t, testWaitNone) }

func testWaitNone(t *testing.T) {
	l, path := listen(t)
	e := startEcho(t, "srv", NewListener(l, nil))
	defer e.srv.Close()
	if !e.conns.WaitNone(time.Second) {
		t.Fatal("no client yet, but WaitNone timed out")
	}
	client := dial(t, path)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := call(ctx, client, "x"); err != nil {
		t.Fatal(err)
	}
	if e.conns.WaitNone(100 * time.Millisecond) {
		t.Fatal("WaitNone returned true with a client connected")
	}
	client.Close()
	if !e.conns.WaitNone(5 * time.Second) {
		t.Fatal("WaitNone did not see the client hang up")
	}
}

// Requests that arrive together (one read brings several messages) are each given to the
// server whole, one at a time, and each answered.
func TestPipelinedRequests(t *testing.T) { bothServers(t, testPipelinedRequests) }

func testPipelinedRequests(t *testing.T) {
	l, path := listen(t)
	e := startEcho(t, "srv", NewListener(l, nil))
	defer e.srv.Close()
	raw, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	var batch []byte
	for i := uint32(0); i < 3; i++ {
		batch = append(batch, requestFrame(t, 2*i+1, fmt.Sprint("m", i))...)
	}
	if _, err := raw.Write(batch); err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for i := 0; i < 3; i++ {
		got[readResponse(t, raw)] = true
	}
	for i := 0; i < 3; i++ {
		if want := fmt.Sprint("srv:m", i); !got[want] {
			t.Errorf("answers %v, want %s", got, want)
		}
	}
}

// An answer the old server writes after its connection was exported (a Wait
// answered by a goroutine that ran late, after the reaper's pause) does not
// reach the client: the successor is given that Wait again and answers it,
// and a second answer on one stream is an error for containerd. It is held,
// and sent after all if the handover is undone.
func TestAnswerAfterExportIsHeld(t *testing.T) { bothServers(t, testAnswerAfterExportIsHeld) }

func testAnswerAfterExportIsHeld(t *testing.T) {
	for _, undone := range []bool{false, true} {
		l, path := listen(t)
		old := startEcho(t, "old", NewListener(l, nil))
		c, err := net.Dial("unix", path)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Write(methodFrame(t, 1, "Wait", "w")); err != nil {
			t.Fatal(err)
		}
		waitRegistered(t, old.conns)
		time.Sleep(50 * time.Millisecond) // the Wait is being served
		if err := old.ln.Pause(time.Second); err != nil {
			t.Fatal(err)
		}
		if err := old.conns.PauseAll(2 * time.Second); err != nil {
			t.Fatal(err)
		}
		var fds FDs
		cst, err := old.conns.ExportAll(&fds)
		if err != nil || len(cst) != 1 || len(cst[0].Carry) == 0 {
			t.Fatalf("exported %+v, %v; want the connection with its Wait", cst, err)
		}
		close(old.parkDone) // the old server answers the Wait now
		time.Sleep(100 * time.Millisecond)
		if undone {
			old.conns.ResumeAll()
			old.ln.Resume()
			if got := readResponse(t, c); got != "old:w" {
				t.Errorf("after the handover was undone the Wait got %q, want the held old:w", got)
			}
		} else {
			_ = c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
			var b [1]byte
			if n, err := c.Read(b[:]); n > 0 || !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Errorf("the client read %d bytes (%v) after the export; want nothing from the old server", n, err)
			}
		}
		fds.Release()
		c.Close()
		old.srv.Close()
	}
}

// An answer written to a client that does not read blocks in the kernel,
// its request still open and parkable. A pause must not complete over it:
// Export would then wait for that write, with everything else paused.
func TestPauseWaitsForAnAnswerBeingWritten(t *testing.T) {
	c, client := connWithParkedWait(t)
	wrote := writeStuckAnswer(t, c)
	time.Sleep(50 * time.Millisecond)
	if err := c.Pause(300 * time.Millisecond); err == nil {
		t.Fatal("the pause completed while an answer was being written")
	}
	c.Resume() // undoing the pause must not wait for the write either
	go func() { _, _ = io.Copy(io.Discard, client) }()
	select {
	case err := <-wrote:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the answer was not written once the client read")
	}
	if err := c.Pause(time.Second); err != nil {
		t.Errorf("a pause with the answer written: %v", err)
	}
}

// An answer that begins after the pause (an exit reaped just before the
// reaper paused) and sticks in a write to a client that does not read:
// Export gives up instead of waiting for it with the daemon paused.
func TestExportGivesUpOnAStuckAnswer(t *testing.T) {
	c, client := connWithParkedWait(t)
	if err := c.Pause(time.Second); err != nil {
		t.Fatal(err)
	}
	wrote := writeStuckAnswer(t, c)
	exported := make(chan error, 1)
	var fds FDs
	defer fds.Release()
	go func() {
		_, err := c.Export(&fds)
		exported <- err
	}()
	select {
	case err := <-exported:
		if err == nil {
			t.Fatal("exported while an answer was being written")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Export waited for the stuck write")
	}
	c.Resume()
	go func() { _, _ = io.Copy(io.Discard, client) }()
	if err := <-wrote; err != nil {
		t.Fatal(err)
	}
}

// An answer held since the export, the handover then undone, and a client
// that does not read: Resume gives up on the write within its bound and
// ends the connection (the answer cannot be completed), instead of holding
// every later connection and the listener paused.
func TestResumeDoesNotWaitForAClientThatDoesNotRead(t *testing.T) {
	defer func(d time.Duration) { resumeWriteTimeout = d }(resumeWriteTimeout)
	resumeWriteTimeout = 100 * time.Millisecond
	c, client := connWithParkedWait(t)
	if err := c.Pause(time.Second); err != nil {
		t.Fatal(err)
	}
	var fds FDs
	defer fds.Release()
	if _, err := c.Export(&fds); err != nil {
		t.Fatal(err)
	}
	answer := bigAnswer()
	if _, err := c.Write(answer); err != nil { // held
		t.Fatal(err)
	}
	fds.Release() // the undo releases the duplicates first (upgrade's switchOver)
	resumed := make(chan struct{})
	go func() { c.Resume(); close(resumed) }()
	select {
	case <-resumed:
	case <-time.After(10 * time.Second):
		t.Fatal("Resume is waiting for a client that does not read")
	}
	_ = client.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, err := io.Copy(io.Discard, client)
	if err != nil || n >= int64(len(answer)) {
		t.Errorf("the client read %d of %d bytes (%v): want part of the answer, then the end of the connection", n, len(answer), err)
	}
}

// connWithParkedWait is a Conn whose server has read a whole Wait request
// and rests at the message boundary, and the client's end, which reads
// nothing unless the test does.
func connWithParkedWait(t *testing.T) (*Conn, net.Conn) {
	t.Helper()
	l, path := listen(t)
	client, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	sc, err := l.AcceptUnix()
	if err != nil {
		t.Fatal(err)
	}
	c := NewConn(sc, nil)
	t.Cleanup(func() { c.Close() })
	req := methodFrame(t, 1, "Wait", "w")
	if _, err := client.Write(req); err != nil {
		t.Fatal(err)
	}
	if _, err := readFull(c, make([]byte, len(req))); err != nil {
		t.Fatal(err)
	}
	c.Rest()
	return c, client
}

// bigAnswer is a ttrpc answer to stream 1 of 2 MiB: more than a socket's
// buffers take.
func bigAnswer() []byte {
	const size = 2 << 20
	answer := make([]byte, ttrpcframe.HeaderLen+size)
	binary.BigEndian.PutUint32(answer[:4], size)
	binary.BigEndian.PutUint32(answer[4:8], 1)
	answer[8] = ttrpcframe.TypeResponse
	return answer
}

// writeStuckAnswer starts writing the Wait's answer, far larger than the
// socket buffers take, and returns once the write is under way.
func writeStuckAnswer(t *testing.T, c *Conn) chan error {
	t.Helper()
	answer := bigAnswer()
	wrote := make(chan error, 1)
	go func() {
		_, err := c.Write(answer)
		wrote <- err
	}()
	for i := 0; ; i++ {
		c.mu.Lock()
		writing := c.writing
		c.mu.Unlock()
		if writing {
			return wrote
		}
		if i > 500 {
			t.Fatal("the answer's write never started")
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// methodFrame is a request frame for method of test.Echo.
func methodFrame(t *testing.T, stream uint32, method, v string) []byte {
	t.Helper()
	payload, err := proto.Marshal(wrapperspb.String(v))
	if err != nil {
		t.Fatal(err)
	}
	body, err := proto.Marshal(&ttrpc.Request{Service: "test.Echo", Method: method, Payload: payload})
	if err != nil {
		t.Fatal(err)
	}
	frame := make([]byte, ttrpcframe.HeaderLen+len(body))
	binary.BigEndian.PutUint32(frame[:4], uint32(len(body)))
	binary.BigEndian.PutUint32(frame[4:8], stream)
	frame[8] = ttrpcframe.TypeRequest
	copy(frame[ttrpcframe.HeaderLen:], body)
	return frame
}
