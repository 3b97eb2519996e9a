package ttrpcserver

import (
	"context"
	"net"
	"runtime"
	"runtime/metrics"
	"testing"

	"github.com/containerd/ttrpc"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/example/containerd-shim-example-v2/internal/ttrpcframe"
)

// What an open, idle connection costs the server is what a pod's shim pays
// for each of its containers (containerd opens one connection per task):
// about a kilobyte of heap and no goroutine, since idle connections wait in
// the server's watcher (1.2-1.4 KB measured; with a goroutine per
// connection 3.6 KB; ttrpc's own server needed two goroutines and 8 KiB of
// buffers, 16-20 KB here). The bound leaves room for the raw clients' own
// descriptors, which this process holds too, and for the race detector's
// allocations, but not for a goroutine's smallest stack (2 KiB) on top.
func TestIdleConnectionCost(t *testing.T) {
	const conns = 200
	const boundPerConn = 3 << 10
	e := newEnv(t, map[string]ttrpc.Method{
		"Upper": typed(func(_ context.Context, s string) (string, error) { return "<" + s + ">", nil }),
	})
	p, _ := proto.Marshal(wrapperspb.String("ok"))
	req, _ := proto.Marshal(&ttrpc.Request{Service: testService, Method: "Upper", Payload: p})
	call := func(c net.Conn) {
		if _, err := c.Write(frame(1, ttrpcframe.TypeRequest, req)); err != nil {
			t.Fatal(err)
		}
		readAnswer(t, c)
	}
	warm := e.dial(t) // first-use costs (coders, pools) are not per connection
	defer warm.Close()
	call(warm)

	before := memInUse()
	open := make([]net.Conn, 0, conns)
	for range conns {
		c := e.dial(t)
		call(c) // served once, then idle
		open = append(open, c)
	}
	after := memInUse()
	for _, c := range open {
		c.Close()
	}
	per := (int64(after) - int64(before)) / conns
	t.Logf("an idle served connection: %d bytes of heap objects and goroutine stacks (bound %d)", per, boundPerConn)
	if per > boundPerConn {
		t.Errorf("an idle connection costs %d bytes, more than %d", per, boundPerConn)
	}
}

// memInUse is the heap's live objects and the goroutine stacks, after
// collections (stacks shrink at a collection).
func memInUse() uint64 {
	runtime.GC()
	runtime.GC()
	s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}, {Name: "/memory/classes/heap/stacks:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64() + s[1].Value.Uint64()
}
