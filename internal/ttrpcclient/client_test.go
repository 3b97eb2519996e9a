package ttrpcclient

import (
	"context"
	"errors"
	"io"
	"net"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containerd/ttrpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/example/containerd-shim-example-v2/internal/ttrpcframe"
	"github.com/example/containerd-shim-example-v2/proto/codec"
	introspect "github.com/example/containerd-shim-example-v2/proto/introspect/v1"
	introspectpb "github.com/example/containerd-shim-example-v2/proto/introspect/v1/pb"
)

// serve runs ttrpc's own server with a Snapshot method answering with
// protobuf-go's types (as any ttrpc peer would).
func serve(t *testing.T, handler func(ctx context.Context, req *introspectpb.SnapshotRequest) (*introspectpb.SnapshotResponse, error)) string {
	t.Helper()
	srv, err := ttrpc.NewServer()
	if err != nil {
		t.Fatal(err)
	}
	srv.RegisterService("test.Introspect", &ttrpc.ServiceDesc{Methods: map[string]ttrpc.Method{
		"Snapshot": func(ctx context.Context, unmarshal func(any) error) (any, error) {
			var req introspectpb.SnapshotRequest
			if err := unmarshal(&req); err != nil {
				return nil, err
			}
			return handler(ctx, &req)
		},
	}})
	sock := filepath.Join(t.TempDir(), "s")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(context.Background(), l)
	t.Cleanup(func() { srv.Close() })
	return sock
}

// Calls against ttrpc's server: the answer decodes into the shim's plain
// types, the deadline travels with the request, an error status comes back
// as a status error, and the connection serves the next call.
func TestCallAgainstTTRPCServer(t *testing.T) {
	sock := serve(t, func(ctx context.Context, _ *introspectpb.SnapshotRequest) (*introspectpb.SnapshotResponse, error) {
		if _, ok := ctx.Deadline(); !ok {
			return nil, status.Error(codes.InvalidArgument, "no deadline came with the call")
		}
		return &introspectpb.SnapshotResponse{Version: "v9", Pid: 42, Events: &introspectpb.EventQueue{Pending: 3}}, nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := Dial(ctx, sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for i := 0; i < 3; i++ {
		var resp introspect.SnapshotResponse
		if err := c.Call(ctx, "test.Introspect", "Snapshot", &introspect.SnapshotRequest{}, &resp); err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
		if resp.Version != "v9" || resp.Pid != 42 || resp.GetEvents().GetPending() != 3 {
			t.Fatalf("call %d: answer %+v", i, &resp)
		}
	}
	err = c.Call(ctx, "test.Introspect", "Missing", &introspect.SnapshotRequest{}, nil)
	if status.Code(err) != codes.Unimplemented {
		t.Fatalf("unknown method: %v, want an Unimplemented status", err)
	}
	if err := c.Call(ctx, "test.Introspect", "Snapshot", &introspect.SnapshotRequest{}, nil); err != nil {
		t.Fatalf("the call after an error status: %v", err)
	}
}

// A status sent in two parts is their merge, as protobuf-go reads it: here
// the code in one part and the text in the other. An empty answer is OK.
func TestAnswerStatusInParts(t *testing.T) {
	answer := []byte{0x0a, 0x02, 0x08, 0x05, 0x0a, 0x05, 0x12, 0x03, 'b', 'a', 'd'}
	err := decodeResponse(answer, nil)
	if status.Code(err) != codes.NotFound || !strings.Contains(err.Error(), "bad") {
		t.Fatalf("decodeResponse = %v, want NotFound \"bad\"", err)
	}
	if err := decodeResponse(nil, nil); err != nil {
		t.Fatalf("an empty answer (OK, no payload) = %v", err)
	}
	// A payload sent twice is the last one, as protobuf-go reads a bytes
	// field (ttrpc.Response.payload): version in the first, pid in the last.
	var resp introspect.SnapshotResponse
	payload := []byte{0x12, 0x04, 0x12, 0x02, 'v', '1', 0x12, 0x02, 0x08, 0x07}
	if err := decodeResponse(payload, &resp); err != nil || resp.Version != "" || resp.Pid != 7 {
		t.Fatalf("payload sent twice: %+v, %v; want only the last (pid 7)", &resp, err)
	}
	// A field number past protobuf's largest (2^29-1) is malformed, as
	// protobuf-go, and ttrpc's own client, say.
	if err := decodeResponse([]byte{0x80, 0x80, 0x80, 0x80, 0x10, 0x00}, nil); err == nil {
		t.Fatal("an answer with a field numbered 2^29 was accepted")
	}
}

// Stream ids never wrap around on one connection: past the last one a call
// is refused before anything is sent, and Exhausted says to dial anew.
func TestStreamIDsDoNotWrap(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	c := New(a)
	if c.Exhausted() {
		t.Fatal("a new connection is exhausted")
	}
	c.nextID = maxStreamID + 2
	if !c.Exhausted() {
		t.Fatal("not exhausted past the last stream id")
	}
	err := c.Call(context.Background(), "s", "m", &introspect.SnapshotRequest{}, nil)
	if err == nil || errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("call past the last stream id = %v, want a refusal", err)
	}
}

// A call whose deadline passes before the server answers ends with
// ErrAnswerPending and leaves the connection usable: Await reads the late
// answer; or a new call is answered while the late answer is skipped.
func TestLateAnswer(t *testing.T) {
	for _, await := range []bool{true, false} {
		release := make(chan struct{})
		var calls atomic.Int32
		sock := serve(t, func(ctx context.Context, _ *introspectpb.SnapshotRequest) (*introspectpb.SnapshotResponse, error) {
			n := calls.Add(1)
			if n == 1 {
				<-release
			}
			return &introspectpb.SnapshotResponse{Pid: uint32(n)}, nil
		})
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		c, err := Dial(ctx, sock)
		if err != nil {
			t.Fatal(err)
		}
		short, cancelShort := context.WithTimeout(ctx, 100*time.Millisecond)
		err = c.Call(short, "test.Introspect", "Snapshot", &introspect.SnapshotRequest{}, nil)
		cancelShort()
		if !errors.Is(err, ErrAnswerPending) {
			t.Fatalf("call past its deadline: %v, want ErrAnswerPending", err)
		}
		var resp introspect.SnapshotResponse
		if await {
			close(release)
			if err := c.Await(ctx, &resp); err != nil || resp.Pid != 1 {
				t.Fatalf("Await: %+v, %v; want the first call's answer (pid 1)", &resp, err)
			}
			if err := c.Await(ctx, &resp); err == nil {
				t.Fatal("a second Await found an answer to wait for")
			}
		} else {
			close(release) // its late answer comes before or after the next call's
		}
		// The connection goes on serving: a new call gets its own answer.
		if err := c.Call(ctx, "test.Introspect", "Snapshot", &introspect.SnapshotRequest{}, &resp); err != nil || resp.Pid != 2 {
			t.Fatalf("await %v: the next call: %+v, %v; want its own answer (pid 2)", await, &resp, err)
		}
		c.Close()
		cancel()
	}
}

// An answer whose deadline passes after part of it came (here in the
// header, then in the body) is still pending, not a broken connection:
// the server is writing it, and a caller that took the break for a lost
// call would send the request again (an event delivered twice). Await
// goes on from the bytes already read and decodes the whole answer.
func TestAnswerCutByTheDeadline(t *testing.T) {
	payload, err := codec.Marshal(&introspect.SnapshotResponse{Pid: 7, Version: "cut"})
	if err != nil {
		t.Fatal(err)
	}
	for _, cutAt := range []int{3, ttrpcframe.HeaderLen + 2} {
		client, server := net.Pipe()
		c := New(client)
		resume := make(chan struct{})
		served := make(chan struct{})
		go func() {
			defer close(served)
			// Read the request's header and body, then answer in two
			// writes: before the cut, and after the client's deadline.
			var hdr [ttrpcframe.HeaderLen]byte
			if _, err := io.ReadFull(server, hdr[:]); err != nil {
				return
			}
			h := ttrpcframe.Parse(hdr[:])
			if _, err := io.ReadFull(server, make([]byte, h.Length)); err != nil {
				return
			}
			body := protowire.AppendTag(nil, ttrpcframe.RespPayload, protowire.BytesType)
			body = protowire.AppendBytes(body, payload)
			frame := make([]byte, ttrpcframe.HeaderLen, ttrpcframe.HeaderLen+len(body))
			ttrpcframe.Put(frame, ttrpcframe.Header{Length: uint32(len(body)), StreamID: h.StreamID, Type: ttrpcframe.TypeResponse})
			frame = append(frame, body...)
			_, _ = server.Write(frame[:cutAt]) // returns once the client has read it
			<-resume                           // the call has given up
			_, _ = server.Write(frame[cutAt:])
		}()
		short, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		err := c.Call(short, "test.Introspect", "Snapshot", &introspect.SnapshotRequest{}, nil)
		cancel()
		close(resume)
		if !errors.Is(err, ErrAnswerPending) {
			t.Fatalf("cut at byte %d: call = %v, want ErrAnswerPending", cutAt, err)
		}
		if c.part.nhdr == 0 {
			t.Fatalf("cut at byte %d: the call's deadline passed before the first part came", cutAt)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		var resp introspect.SnapshotResponse
		err = c.Await(ctx, &resp)
		cancel()
		if err != nil || resp.Pid != 7 || resp.Version != "cut" {
			t.Fatalf("cut at byte %d: Await = %+v, %v; want the whole answer (pid 7)", cutAt, &resp, err)
		}
		<-served
		client.Close()
		server.Close()
	}
}
