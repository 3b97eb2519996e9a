package ttrpcserver

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/containerd/ttrpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/example/containerd-shim-example-v2/internal/ttrpcframe"
)

const testService = "example.test.v1.Echo"

// env is a server on a unix socket in a temp dir, with one client.
type env struct {
	srv    *Server
	sock   string
	client *ttrpc.Client
	served chan error
	mu     sync.Mutex
	seen   []string // OnRequest's names
}

func newEnv(t *testing.T, methods map[string]ttrpc.Method) *env {
	t.Helper()
	return newEnvWith(t, methods, Options{})
}

// newEnvWith is newEnv with options (its OnRequest is the env's own).
func newEnvWith(t testing.TB, methods map[string]ttrpc.Method, opts Options) *env {
	t.Helper()
	e := &env{sock: filepath.Join(t.TempDir(), "s"), served: make(chan error, 1)}
	opts.OnRequest = func(m string) {
		e.mu.Lock()
		e.seen = append(e.seen, m)
		e.mu.Unlock()
	}
	e.srv = New(opts)
	e.srv.RegisterService(testService, &ttrpc.ServiceDesc{Methods: methods})
	l, err := net.Listen("unix", e.sock)
	if err != nil {
		t.Fatal(err)
	}
	go func() { e.served <- e.srv.Serve(context.Background(), l) }()
	e.client = ttrpc.NewClient(e.dial(t))
	t.Cleanup(func() {
		e.client.Close()
		e.srv.Close()
	})
	return e
}

// envMaker makes a test's env.
type envMaker func(t *testing.T, methods map[string]ttrpc.Method) *env

// inBothModes runs a test against a server whose idle connections wait in
// its watcher and against one with a goroutine per connection.
func inBothModes(t *testing.T, test func(t *testing.T, newEnv envMaker)) {
	for _, perConn := range []bool{false, true} {
		name := "watched"
		if perConn {
			name = "goroutine-per-conn"
		}
		t.Run(name, func(t *testing.T) {
			test(t, func(t *testing.T, methods map[string]ttrpc.Method) *env {
				t.Helper()
				return newEnvWith(t, methods, Options{GoroutinePerConn: perConn})
			})
		})
	}
}

func (e *env) dial(t testing.TB) net.Conn {
	t.Helper()
	c, err := net.Dial("unix", e.sock)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// expectServeEnded waits for Serve to return ErrServerClosed after what
// closed the server.
func (e *env) expectServeEnded(t *testing.T, after string) {
	t.Helper()
	select {
	case err := <-e.served:
		if !errors.Is(err, ErrServerClosed) {
			t.Errorf("Serve returned %v after %s, want ErrServerClosed", err, after)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("Serve did not return after %s", after)
	}
}

func (e *env) call(ctx context.Context, method string, in string) (string, error) {
	var out wrapperspb.StringValue
	err := e.client.Call(ctx, testService, method, wrapperspb.String(in), &out)
	return out.GetValue(), err
}

// typed adapts a string -> string handler to ttrpc's method signature.
func typed(h func(context.Context, string) (string, error)) ttrpc.Method {
	return func(ctx context.Context, unmarshal func(any) error) (any, error) {
		var in wrapperspb.StringValue
		if err := unmarshal(&in); err != nil {
			return nil, err
		}
		out, err := h(ctx, in.GetValue())
		if err != nil {
			return nil, err
		}
		return wrapperspb.String(out), nil
	}
}

func TestUnaryCallsAndTheirErrors(t *testing.T) {
	inBothModes(t, func(t *testing.T, newEnv envMaker) {
		e := newEnv(t, map[string]ttrpc.Method{
			"Upper": typed(func(_ context.Context, s string) (string, error) { return "<" + s + ">", nil }),
			"Empty": typed(func(context.Context, string) (string, error) { return "", nil }),
			"NotFound": typed(func(context.Context, string) (string, error) {
				return "", errgrpc.ToGRPC(fmt.Errorf("container x: %w", errdefs.ErrNotFound))
			}),
			"Plain": typed(func(context.Context, string) (string, error) { return "", os.ErrExist }),
			"Nil": func(context.Context, func(any) error) (any, error) {
				var m *wrapperspb.StringValue
				return m, nil // a typed nil: must become an error, not a panic or an empty answer
			},
			"NotProto": func(context.Context, func(any) error) (any, error) { return 42, nil },
			// Text that is not UTF-8 (a path, a runtime's output) in an error, and in an
			// answer: proto3 cannot encode either as it is.
			"BadErrorText": typed(func(context.Context, string) (string, error) {
				return "", errgrpc.ToGRPC(fmt.Errorf("open /x\xff: %w", errdefs.ErrNotFound))
			}),
			"BadAnswerText": typed(func(context.Context, string) (string, error) { return "/x\xff", nil }),
		})
		ctx := context.Background()

		if out, err := e.call(ctx, "Upper", "abc"); err != nil || out != "<abc>" {
			t.Fatalf("Upper: %q, %v", out, err)
		}
		if out, err := e.call(ctx, "Empty", "abc"); err != nil || out != "" {
			t.Fatalf("Empty (an answer of zero bytes): %q, %v", out, err)
		}
		_, err := e.call(ctx, "NotFound", "")
		if !errdefs.IsNotFound(errgrpc.ToNative(err)) {
			t.Errorf("NotFound: got %v, want an errdefs NotFound through the wire", err)
		}
		for method, want := range map[string]codes.Code{
			"Plain":    codes.AlreadyExists, // the code ttrpc's own server guesses for os.ErrExist
			"Nil":      codes.Unknown,
			"NotProto": codes.Unknown,
			"Missing":  codes.Unimplemented,
		} {
			if _, err := e.call(ctx, method, ""); status.Code(err) != want {
				t.Errorf("%s: got %v (code %v), want code %v", method, err, status.Code(err), want)
			}
		}
		// Both still get an answer (before, the first got none and waited for its
		// deadline): the error's text with the bad byte replaced, and an error for the
		// answer that cannot be encoded.
		callCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		if _, err := e.call(callCtx, "BadErrorText", ""); status.Code(err) != codes.NotFound || !strings.Contains(err.Error(), "open /x\uFFFD") {
			t.Errorf("BadErrorText: got %v, want NotFound with the text made valid", err)
		}
		if _, err := e.call(callCtx, "BadAnswerText", ""); status.Code(err) != codes.Unknown || !strings.Contains(err.Error(), "UTF-8") {
			t.Errorf("BadAnswerText: got %v, want an error saying the answer could not be encoded", err)
		}
		var out wrapperspb.StringValue
		if err := e.client.Call(ctx, "no.such.Service", "Upper", wrapperspb.String(""), &out); status.Code(err) != codes.Unimplemented {
			t.Errorf("unknown service: got %v, want Unimplemented", err)
		}
		e.mu.Lock()
		defer e.mu.Unlock()
		if len(e.seen) == 0 || e.seen[0] != "/"+testService+"/Upper" {
			t.Errorf("OnRequest saw %q, want the full method names, first /%s/Upper", e.seen, testService)
		}
		for _, m := range e.seen {
			if m == "/"+testService+"/Missing" {
				t.Errorf("OnRequest was called for an unknown method")
			}
		}
	})
}

func TestCallsOnOneConnectionDoNotWaitForEachOther(t *testing.T) {
	inBothModes(t, func(t *testing.T, newEnv envMaker) {
		release := make(chan struct{})
		e := newEnv(t, map[string]ttrpc.Method{
			"Block": typed(func(ctx context.Context, s string) (string, error) {
				select {
				case <-release:
					return "released", nil
				case <-ctx.Done():
					return "", ctx.Err()
				}
			}),
			"Upper": typed(func(_ context.Context, s string) (string, error) { return "<" + s + ">", nil }),
		})
		blocked := make(chan error, 1)
		go func() {
			out, err := e.call(context.Background(), "Block", "")
			if err == nil && out != "released" {
				err = fmt.Errorf("answer %q", out)
			}
			blocked <- err
		}()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		for i := range 20 { // many calls while one is held
			if out, err := e.call(ctx, "Upper", fmt.Sprint(i)); err != nil || out != fmt.Sprintf("<%d>", i) {
				t.Fatalf("call %d behind a held call: %q, %v", i, out, err)
			}
		}
		select {
		case err := <-blocked:
			t.Fatalf("the held call returned before it was released: %v", err)
		default:
		}
		close(release)
		if err := <-blocked; err != nil {
			t.Fatalf("held call: %v", err)
		}
	})
}

func TestMetadataTimeoutAndHangup(t *testing.T) {
	inBothModes(t, func(t *testing.T, newEnv envMaker) {
		cancelled := make(chan error, 1)
		holding := make(chan struct{}, 1)
		e := newEnv(t, map[string]ttrpc.Method{
			"Meta": typed(func(ctx context.Context, _ string) (string, error) {
				md, _ := ttrpc.GetMetadata(ctx)
				v, _ := md.Get("containerd-namespace-ttrpc")
				_, hasDeadline := ctx.Deadline()
				return fmt.Sprintf("%q deadline=%v", v, hasDeadline), nil
			}),
			"Hold": typed(func(ctx context.Context, _ string) (string, error) {
				holding <- struct{}{}
				<-ctx.Done()
				cancelled <- ctx.Err()
				return "", ctx.Err()
			}),
		})
		ctx := ttrpc.WithMetadata(context.Background(), ttrpc.MD{"containerd-namespace-ttrpc": {"k8s.io", "x"}})
		out, err := e.call(ctx, "Meta", "")
		if err != nil || out != `["k8s.io" "x"] deadline=false` {
			t.Errorf("metadata: %s, %v", out, err)
		}
		tctx, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		if out, err := e.call(tctx, "Meta", ""); err != nil || out != `["k8s.io" "x"] deadline=true` {
			t.Errorf("a client deadline must reach the handler: %s, %v", out, err)
		}

		// A client that hangs up cancels its calls: a Wait must not outlive
		// containerd's connection.
		c2 := ttrpc.NewClient(e.dial(t))
		go func() {
			var out wrapperspb.StringValue
			_ = c2.Call(context.Background(), testService, "Hold", wrapperspb.String(""), &out)
		}()
		<-holding // Hold runs
		c2.Close()
		select {
		case err := <-cancelled:
			if !errors.Is(err, context.Canceled) {
				t.Errorf("held call ended with %v, want context.Canceled", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("a call whose client hung up was not cancelled")
		}
	})
}

// frame writes one raw message.
func frame(id uint32, typ byte, body []byte) []byte {
	b := make([]byte, ttrpcframe.HeaderLen, ttrpcframe.HeaderLen+len(body))
	binary.BigEndian.PutUint32(b[0:4], uint32(len(body)))
	binary.BigEndian.PutUint32(b[4:8], id)
	b[8] = typ
	return append(b, body...)
}

// requestFrame is a whole request frame on stream id: method of the test
// service, called with in.
func requestFrame(id uint32, method, in string) []byte {
	p, _ := proto.Marshal(wrapperspb.String(in))
	b, _ := proto.Marshal(&ttrpc.Request{Service: testService, Method: method, Payload: p})
	return frame(id, ttrpcframe.TypeRequest, b)
}

// readAnswer reads one response frame and decodes it.
func readAnswer(t *testing.T, c net.Conn) (uint32, *ttrpc.Response) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	var h [ttrpcframe.HeaderLen]byte
	if _, err := io.ReadFull(c, h[:]); err != nil {
		t.Fatalf("read answer header: %v", err)
	}
	ph := ttrpcframe.Parse(h[:])
	if ph.Type != ttrpcframe.TypeResponse {
		t.Fatalf("answer of type %d", ph.Type)
	}
	body := make([]byte, ph.Length)
	if _, err := io.ReadFull(c, body); err != nil {
		t.Fatalf("read answer body: %v", err)
	}
	var r ttrpc.Response
	if err := proto.Unmarshal(body, &r); err != nil {
		t.Fatalf("decode answer: %v", err)
	}
	return ph.StreamID, &r
}

func TestMalformedMessagesGetAnAnswerAndTheConnectionLives(t *testing.T) {
	inBothModes(t, func(t *testing.T, newEnv envMaker) {
		e := newEnv(t, map[string]ttrpc.Method{
			"Upper": typed(func(_ context.Context, s string) (string, error) { return "<" + s + ">", nil }),
		})
		c := e.dial(t)
		defer c.Close()
		good := func(id uint32) []byte { return requestFrame(id, "Upper", "ok") }
		huge := frame(1, ttrpcframe.TypeRequest, make([]byte, ttrpcframe.MaxPayload+1))
		cases := []struct {
			name string
			msg  []byte
			id   uint32
			want codes.Code
		}{
			{"oversized", huge, 1, codes.ResourceExhausted},
			{"even stream id", good(2), 2, codes.InvalidArgument},
			{"not a request", frame(3, ttrpcframe.TypeRequest, []byte{0xff, 0xff, 0xff}), 3, codes.InvalidArgument},
			{"data for no stream", frame(5, ttrpcframe.TypeData, nil), 5, codes.InvalidArgument},
			{"valid", good(7), 7, codes.OK},
			{"stream id reused", good(7), 7, codes.InvalidArgument},
			{"valid again", good(9), 9, codes.OK},
		}
		for _, tc := range cases {
			if _, err := c.Write(tc.msg); err != nil {
				t.Fatalf("%s: write: %v", tc.name, err)
			}
			id, r := readAnswer(t, c)
			if id != tc.id || codes.Code(r.GetStatus().GetCode()) != tc.want {
				t.Errorf("%s: answer on stream %d with %v (%s), want stream %d with %v",
					tc.name, id, codes.Code(r.GetStatus().GetCode()), r.GetStatus().GetMessage(), tc.id, tc.want)
			}
			if tc.want == codes.OK {
				var out wrapperspb.StringValue
				if err := proto.Unmarshal(r.Payload, &out); err != nil || out.GetValue() != "<ok>" {
					t.Errorf("%s: payload %q, %v", tc.name, out.GetValue(), err)
				}
			}
		}
	})
}

// A client that opens a stream to a unary method and closes its side of it
// (ttrpc's NewStream, then CloseSend: a Data frame on the call's stream)
// still gets the call's answer, and only that: the Data frame is not
// answered with an error ahead of it.
func TestDataOnACallsStreamLeavesItsOneAnswer(t *testing.T) {
	inBothModes(t, func(t *testing.T, newEnv envMaker) {
		e := newEnv(t, map[string]ttrpc.Method{
			"Slow": typed(func(_ context.Context, s string) (string, error) {
				time.Sleep(50 * time.Millisecond) // still running when the Data frame comes
				return "<" + s + ">", nil
			}),
		})
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		cs, err := e.client.NewStream(ctx, &ttrpc.StreamDesc{StreamingClient: true}, testService, "Slow", wrapperspb.String("x"))
		if err != nil {
			t.Fatal(err)
		}
		if err := cs.CloseSend(); err != nil {
			t.Fatal(err)
		}
		var out wrapperspb.StringValue
		if err := cs.RecvMsg(&out); err != nil || out.GetValue() != "<x>" {
			t.Errorf("RecvMsg: %q, %v; want the call's answer \"<x>\"", out.GetValue(), err)
		}

		// The same on the wire: after the call's answer, the next frame is
		// the next call's, not a second answer on the first stream.
		c := e.dial(t)
		defer c.Close()
		req := func(id uint32) []byte { return requestFrame(id, "Slow", "w") }
		closeSend := frame(1, ttrpcframe.TypeData, nil)
		closeSend[9] = 0x5 // remote closed, no data: what CloseSend sends
		for _, msg := range [][]byte{req(1), closeSend} {
			if _, err := c.Write(msg); err != nil {
				t.Fatal(err)
			}
		}
		if id, r := readAnswer(t, c); id != 1 || r.GetStatus().GetCode() != 0 {
			t.Fatalf("first answer: stream %d, %v; want stream 1, OK", id, r.GetStatus())
		}
		if _, err := c.Write(req(3)); err != nil {
			t.Fatal(err)
		}
		if id, r := readAnswer(t, c); id != 3 || r.GetStatus().GetCode() != 0 {
			t.Errorf("next answer: stream %d, %v; want stream 3, OK", id, r.GetStatus())
		}
	})
}

func TestCloseEndsServeAndConnections(t *testing.T) {
	inBothModes(t, func(t *testing.T, newEnv envMaker) {
		e := newEnv(t, map[string]ttrpc.Method{})
		c := e.dial(t)
		defer c.Close()
		// One answer proves the connection accepted (a connection still in
		// the listener's backlog is reset, not ended, when it closes).
		req, _ := proto.Marshal(&ttrpc.Request{Service: testService, Method: "Missing"})
		if _, err := c.Write(frame(1, ttrpcframe.TypeRequest, req)); err != nil {
			t.Fatal(err)
		}
		if _, r := readAnswer(t, c); codes.Code(r.GetStatus().GetCode()) != codes.Unimplemented {
			t.Fatalf("the first answer: %v", r.GetStatus())
		}
		if err := e.srv.Close(); err != nil {
			t.Fatal(err)
		}
		e.expectServeEnded(t, "Close")
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
			t.Errorf("an open connection after Close: read gave %v, want EOF", err)
		}
	})
}

// The request's timeout is the call's deadline, as ttrpc's server makes it:
// only 0 means none; a negative one (the client's deadline passed while it
// built the request) is a deadline already gone, not an unbounded call.
func TestRequestTimeoutIsTheCallsDeadline(t *testing.T) {
	inBothModes(t, func(t *testing.T, newEnv envMaker) {
		e := newEnv(t, map[string]ttrpc.Method{
			"Deadline": typed(func(ctx context.Context, _ string) (string, error) {
				dl, ok := ctx.Deadline()
				switch {
				case !ok:
					return "none", nil
				case ctx.Err() != nil:
					return "expired", nil
				default:
					return fmt.Sprintf("in %v", time.Until(dl).Round(time.Second)), nil
				}
			}),
		})
		c := e.dial(t)
		defer c.Close()
		p, _ := proto.Marshal(wrapperspb.String(""))
		for i, tc := range []struct {
			timeout int64
			want    string
		}{{0, "none"}, {-1, "expired"}, {int64(30 * time.Second), "in 30s"}} {
			req, _ := proto.Marshal(&ttrpc.Request{Service: testService, Method: "Deadline", Payload: p, TimeoutNano: tc.timeout})
			id := uint32(2*i + 1)
			if _, err := c.Write(frame(id, ttrpcframe.TypeRequest, req)); err != nil {
				t.Fatal(err)
			}
			_, resp := readAnswer(t, c)
			var out wrapperspb.StringValue
			if err := proto.Unmarshal(resp.Payload, &out); err != nil {
				t.Fatal(err)
			}
			if out.GetValue() != tc.want {
				t.Errorf("timeout %d: the handler saw %q, want %q", tc.timeout, out.GetValue(), tc.want)
			}
		}
	})
}

// A Serve that starts after Close (its goroutine ran late) must not leave
// its listener open: clients would connect into the backlog and wait for an
// answer that never comes, each until its own deadline.
func TestServeAfterCloseClosesTheListener(t *testing.T) {
	srv := New(Options{})
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(t.TempDir(), "s")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if err := srv.Serve(context.Background(), l); !errors.Is(err, ErrServerClosed) {
		t.Fatalf("Serve after Close returned %v, want ErrServerClosed", err)
	}
	if c, err := net.Dial("unix", sock); err == nil {
		c.Close()
		t.Fatal("the listener still takes connections after Serve returned")
	}
}

// The wire format must be what ttrpc's own code writes and reads: answers
// are compared byte for byte with ttrpc.Response as protobuf encodes it,
// and requests encoded by ttrpc.Request decode to the same fields.
func TestWireFormatMatchesTtrpc(t *testing.T) {
	msg := wrapperspb.String("payload")
	for _, st := range []*status.Status{nil, status.New(codes.NotFound, "no such thing")} {
		got, err := encodeResponse(41, st, msg)
		if err != nil {
			t.Fatal(err)
		}
		p, _ := proto.Marshal(msg)
		// ttrpc's server answers with status.FromError(err).Proto(): nil,
		// no field at all, for OK.
		stp := st.Proto()
		want, _ := proto.MarshalOptions{Deterministic: true}.Marshal(&ttrpc.Response{Status: stp, Payload: p})
		if !bytes.Equal(got[ttrpcframe.HeaderLen:], want) {
			t.Errorf("status %v: body %x, ttrpc's %x", st, got[ttrpcframe.HeaderLen:], want)
		}
		if h := ttrpcframe.Parse(got[:ttrpcframe.HeaderLen]); h.Length != uint32(len(want)) || h.StreamID != 41 || h.Type != ttrpcframe.TypeResponse {
			t.Errorf("header %+v", h)
		}
	}

	in := &ttrpc.Request{Service: "svc", Method: "M", Payload: []byte{1, 2, 3}, TimeoutNano: 1234,
		Metadata: []*ttrpc.KeyValue{{Key: "a", Value: "1"}, {Key: "a", Value: "2"}, {Key: "b", Value: ""}}}
	b, _ := proto.Marshal(in)
	r, err := decodeRequest(b)
	if err != nil {
		t.Fatal(err)
	}
	if string(r.service) != "svc" || string(r.method) != "M" || !bytes.Equal(r.payload, []byte{1, 2, 3}) || r.timeout != 1234 {
		t.Errorf("decoded %+v", r)
	}
	if fmt.Sprint(r.metadata) != fmt.Sprint(ttrpc.MD{"a": {"1", "2"}, "b": {""}}) {
		t.Errorf("metadata %v", r.metadata)
	}
	if _, err := decodeRequest(b[:len(b)-1]); err == nil {
		t.Error("a truncated request decoded without error")
	}
}

// A call answered Later holds the connection open for that call only; its
// answer may come from any goroutine, even during its start, and only the
// first counts. A client that hangs up, or whose deadline passes, abandons
// a call still waiting: the handler's abandon function runs, once.
func TestLaterAnswers(t *testing.T) {
	inBothModes(t, func(t *testing.T, newEnv envMaker) {
		type pending struct {
			answer    func(any, error)
			abandoned chan struct{}
		}
		calls := make(chan pending, 4)
		e := newEnv(t, map[string]ttrpc.Method{
			"Later": func(ctx context.Context, unmarshal func(any) error) (any, error) {
				var in wrapperspb.StringValue
				if err := unmarshal(&in); err != nil {
					return nil, err
				}
				return Later(func(answer func(any, error)) func() {
					if in.GetValue() == "now" {
						answer(wrapperspb.String("at once"), nil)
						return func() { t.Error("an answered call was abandoned") }
					}
					p := pending{answer, make(chan struct{})}
					calls <- p
					return func() { close(p.abandoned) } // a second call would panic
				}), nil
			},
			"Upper": typed(func(_ context.Context, s string) (string, error) { return "<" + s + ">", nil }),
		})
		got := make(chan string, 1)
		go func() {
			out, err := e.call(context.Background(), "Later", "x")
			got <- fmt.Sprint(out, err)
		}()
		p := <-calls
		if out, err := e.call(context.Background(), "Upper", "y"); err != nil || out != "<y>" {
			t.Fatalf("a call behind a Later one: %q, %v", out, err)
		}
		select {
		case s := <-got:
			t.Fatalf("answered before its answer was given: %s", s)
		case <-time.After(50 * time.Millisecond):
		}
		go p.answer(wrapperspb.String("first"), nil)
		if s := <-got; s != "first<nil>" {
			t.Errorf("Later answer: %s", s)
		}
		p.answer(wrapperspb.String("second"), nil) // ignored: one answer per call
		if out, err := e.call(context.Background(), "Upper", "z"); err != nil || out != "<z>" {
			t.Fatalf("after a second answer was dropped: %q, %v", out, err)
		}
		if out, err := e.call(context.Background(), "Later", "now"); err != nil || out != "at once" {
			t.Errorf("answered during its start: %q, %v", out, err)
		}

		// An error answer keeps its code.
		go func() {
			_, err := e.call(context.Background(), "Later", "")
			got <- status.Code(err).String()
		}()
		(<-calls).answer(nil, errgrpc.ToGRPC(errdefs.ErrNotFound))
		if s := <-got; s != codes.NotFound.String() {
			t.Errorf("Later error answer: code %s, want NotFound", s)
		}

		// The client's deadline passes: DeadlineExceeded, and the call is abandoned.
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
			defer cancel()
			_, err := e.call(ctx, "Later", "")
			if errors.Is(err, context.DeadlineExceeded) { // the client gave up first
				err = status.Error(codes.DeadlineExceeded, "client")
			}
			got <- status.Code(err).String()
		}()
		p = <-calls
		select {
		case <-p.abandoned:
		case <-time.After(5 * time.Second):
			t.Fatal("a Later call whose deadline passed was not abandoned")
		}
		if s := <-got; s != codes.DeadlineExceeded.String() {
			t.Errorf("Later call past its deadline: code %s", s)
		}
		p.answer(wrapperspb.String("late"), nil) // dropped

		// The client hangs up.
		c2 := ttrpc.NewClient(e.dial(t))
		go func() {
			var out wrapperspb.StringValue
			_ = c2.Call(context.Background(), testService, "Later", wrapperspb.String(""), &out)
		}()
		p = <-calls
		c2.Close()
		select {
		case <-p.abandoned:
		case <-time.After(5 * time.Second):
			t.Fatal("a Later call whose client hung up was not abandoned")
		}
		p.answer(wrapperspb.String("late"), nil) // to a closed connection: dropped

		// Nothing stays registered.
		e.srv.mu.Lock()
		defer e.srv.mu.Unlock()
		for c := range e.srv.conns {
			c.pmu.Lock()
			if len(c.pending) != 0 {
				t.Errorf("%d calls still registered after their answers", len(c.pending))
			}
			c.pmu.Unlock()
		}
	})
}

// A call that makes the server shut down, as the task API's Shutdown makes
// the daemon leave, still gets its answer: Shutdown waits for the calls
// running, where Close cut the connection under them.
func TestShutdownLetsRunningCallsAnswer(t *testing.T) {
	inBothModes(t, func(t *testing.T, newEnv envMaker) {
		asked := make(chan struct{})
		e := newEnv(t, map[string]ttrpc.Method{
			"Leave": typed(func(ctx context.Context, in string) (string, error) {
				close(asked)
				// The daemon's exit path runs meanwhile, and would have
				// closed the connection before this answer.
				time.Sleep(50 * time.Millisecond)
				return "bye " + in, nil
			}),
		})
		shut := make(chan error, 1)
		go func() {
			<-asked
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			shut <- e.srv.Shutdown(ctx)
		}()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if out, err := e.call(ctx, "Leave", "now"); err != nil || out != "bye now" {
			t.Fatalf("the call that asked for the shutdown: %q, %v; want its answer", out, err)
		}
		if err := <-shut; err != nil {
			t.Fatalf("Shutdown: %v", err)
		}
		e.expectServeEnded(t, "Shutdown")
		if _, err := net.Dial("unix", e.sock); err == nil {
			t.Error("a new connection was accepted after Shutdown")
		}
	})
}

// Shutdown waits for running calls only until its context ends: a call
// that never finishes is cut off with its connection.
func TestShutdownGivesUpOnCallsThatDoNotFinish(t *testing.T) {
	inBothModes(t, func(t *testing.T, newEnv envMaker) {
		stuck := make(chan struct{})
		running := make(chan struct{})
		defer close(stuck)
		e := newEnv(t, map[string]ttrpc.Method{
			"Stuck": typed(func(ctx context.Context, in string) (string, error) {
				close(running)
				<-stuck
				return "", nil
			}),
		})
		cut := make(chan error, 1)
		go func() {
			_, err := e.call(context.Background(), "Stuck", "")
			cut <- err
		}()
		<-running
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		if err := e.srv.Shutdown(ctx); err != nil {
			t.Fatalf("Shutdown: %v", err)
		}
		if ctx.Err() == nil {
			t.Error("Shutdown returned before its context ended, with a call still running")
		}
		expectCutOff(t, "Stuck", cut)
	})
}

// A call answered Later (a Wait on a process that never exits) is not
// waited for: Shutdown ends it at once, as Close does.
func TestShutdownDoesNotWaitForParkedCalls(t *testing.T) {
	inBothModes(t, func(t *testing.T, newEnv envMaker) {
		in := make(chan struct{})
		e := newEnv(t, map[string]ttrpc.Method{
			"Park": func(ctx context.Context, unmarshal func(any) error) (any, error) {
				close(in)
				return Later(func(func(any, error)) func() { return nil }), nil
			},
		})
		parked := make(chan error, 1)
		go func() {
			_, err := e.call(context.Background(), "Park", "")
			parked <- err
		}()
		<-in
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		done := make(chan error, 1)
		go func() { done <- e.srv.Shutdown(ctx) }()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("Shutdown: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("Shutdown waited for a parked call")
		}
		expectCutOff(t, "Park", parked)
	})
}

// expectCutOff waits for a call's end and checks that it ended with its
// connection.
func expectCutOff(t *testing.T, name string, ch <-chan error) {
	t.Helper()
	select {
	case err := <-ch:
		if !errors.Is(err, ttrpc.ErrClosed) {
			t.Errorf("%s after Shutdown: %v, want ttrpc.ErrClosed", name, err)
		}
	case <-time.After(5 * time.Second):
		t.Errorf("%s was not cut off by Shutdown", name)
	}
}

// HandlersIdle waits for the handlers that run, those of calls whose client
// has hung up included (an in-place upgrade asks it once the connections,
// which no longer count such a call, are paused), and not for calls
// answered Later whose handler has returned.
func TestHandlersIdle(t *testing.T) {
	inBothModes(t, func(t *testing.T, newEnv envMaker) {
		entered, release := make(chan struct{}, 1), make(chan struct{})
		e := newEnv(t, map[string]ttrpc.Method{
			"Block": typed(func(context.Context, string) (string, error) {
				entered <- struct{}{}
				<-release
				return "done", nil
			}),
			"Park": func(context.Context, func(any) error) (any, error) {
				return Later(func(func(any, error)) func() { return nil }), nil
			},
		})
		if !e.srv.HandlersIdle(time.Second) {
			t.Fatal("HandlersIdle false with no call made")
		}
		go e.call(context.Background(), "Park", "") // parked for good
		c := e.dial(t)
		if _, err := c.Write(requestFrame(1, "Block", "x")); err != nil {
			t.Fatal(err)
		}
		<-entered
		c.Close() // the client hangs up; the handler runs on
		if e.srv.HandlersIdle(200 * time.Millisecond) {
			t.Error("HandlersIdle true while a handler runs for a client that hung up")
		}
		close(release)
		if !e.srv.HandlersIdle(2 * time.Second) {
			t.Error("HandlersIdle false after the handler returned (a parked Later call counted?)")
		}
	})
}

// A call read from its connection counts for HandlersIdle from then on, not
// only once its goroutine has got as far as the handler: a request read just
// before an upgrade's pause, whose client then hung up, has its handler run
// after HandlersIdle said none would (its goroutine not scheduled yet, or in
// OnRequest), and changes what the upgrade describes.
func TestHandlersIdleCountsACallBeforeItsHandler(t *testing.T) {
	for _, perConn := range []bool{false, true} {
		t.Run(fmt.Sprintf("goroutine-per-conn=%v", perConn), func(t *testing.T) {
			hooked, release, ran := make(chan struct{}, 1), make(chan struct{}), make(chan struct{}, 1)
			// OnRequest holds the call between its dispatch and its handler,
			// where a goroutine not yet scheduled would be.
			srv := New(Options{GoroutinePerConn: perConn, OnRequest: func(string) {
				hooked <- struct{}{}
				<-release
			}})
			srv.RegisterService(testService, &ttrpc.ServiceDesc{Methods: map[string]ttrpc.Method{
				"Start": typed(func(context.Context, string) (string, error) {
					ran <- struct{}{}
					return "", nil
				}),
			}})
			sock := filepath.Join(t.TempDir(), "s")
			l, err := net.Listen("unix", sock)
			if err != nil {
				t.Fatal(err)
			}
			go srv.Serve(context.Background(), l)
			defer srv.Close()
			c, err := net.Dial("unix", sock)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := c.Write(requestFrame(1, "Start", "x")); err != nil {
				t.Fatal(err)
			}
			<-hooked
			c.Close() // the client hangs up
			idle := srv.HandlersIdle(100 * time.Millisecond)
			close(release)
			<-ran
			if idle {
				t.Error("HandlersIdle said no handler runs; the handler of a call already read ran after it")
			}
		})
	}
}
