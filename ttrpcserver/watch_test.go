package ttrpcserver

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/ttrpc"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// A connection's key survives epoll's user data whatever its size: a key
// read back wrong would leave its connection unread forever.
func TestTokenRoundTrip(t *testing.T) {
	for _, token := range []uint64{1, 1<<31 - 1, 1 << 31, 1<<32 - 1, 1 << 32, 1<<63 + 12345} {
		ev := unix.EpollEvent{Fd: int32(uint32(token)), Pad: int32(uint32(token >> 32))}
		if got := tokenOf(ev); got != token {
			t.Errorf("token %#x read back as %#x", token, got)
		}
	}
}

// unwatchable is a connection whose descriptor, as the watcher sees it, is
// a regular file, which epoll refuses: the server must serve it with a
// goroutine of its own instead.
type unwatchable struct {
	net.Conn
	file *os.File
}

func (u unwatchable) SyscallConn() (syscall.RawConn, error) { return u.file.SyscallConn() }

type unwatchableHandshake struct{ file *os.File }

func (h unwatchableHandshake) Handshake(_ context.Context, c net.Conn) (net.Conn, any, error) {
	return unwatchable{Conn: c, file: h.file}, nil, nil
}

func TestConnectionEpollRefusesIsServedAnyway(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "regular"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sock := filepath.Join(t.TempDir(), "s")
	srv := New(Options{Handshaker: unwatchableHandshake{file: f}})
	srv.RegisterService(testService, &ttrpc.ServiceDesc{Methods: map[string]ttrpc.Method{
		"Upper": typed(func(_ context.Context, s string) (string, error) { return "<" + s + ">", nil }),
	}})
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(context.Background(), l)
	defer srv.Close()
	nc, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	client := ttrpc.NewClient(nc)
	defer client.Close()
	for i := range 3 { // more than one: the first call proves little on its own
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		var out wrapperspb.StringValue
		err := client.Call(ctx, testService, "Upper", wrapperspb.String("x"), &out)
		cancel()
		if err != nil || out.GetValue() != "<x>" {
			t.Fatalf("call %d: %q, %v", i, out.GetValue(), err)
		}
	}
}
