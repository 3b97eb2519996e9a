package integration

import (
	"context"
	"encoding/binary"
	"net"
	"syscall"
	"testing"
	"time"

	taskv2 "github.com/containerd/containerd/api/runtime/task/v2"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/ttrpc"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/example/containerd-shim-example-v2/integration/harness"
)

// A client of its own on the shim's socket (a tool driving the shim directly,
// as `ctr shim` does) that sends requests and then stops reading the answers
// (stopped, frozen, or just slow) must not hold back anyone else's answers: a
// Wait it had registered on a task, answered when the task exits, may block
// on its full socket, but containerd's own Wait on that task, on containerd's
// own connection, must still be answered. The stock shim answers each call on
// a goroutine of its own.
func TestStalledClientDoesNotHoldBackOthersWait(t *testing.T) {
	forEachFlavor(t, func(t *testing.T, d *harness.Daemon) {
		ctx, ns := d.NewNamespace(t)
		ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		defer cancel()
		const id = "stalledwait"
		ctr := newContainer(t, ctx, d, id, loopArgs)
		task, err := ctr.NewTask(ctx, cio.NullIO)
		if err != nil {
			t.Fatal(err)
		}
		socket := d.ShimSocketPath(ns, id)
		conn, err := net.DialTimeout("unix", socket, 5*time.Second)
		if err != nil {
			t.Fatalf("dial shim socket %s: %v", socket, err)
		}
		defer conn.Close()
		service := "containerd.task.v2.Task" // both shims serve it under 1.6
		if d.Is2x() {
			service = "containerd.task.v3.Task" // the 2.x stock shim serves only v3
		}
		frame := func(stream uint32, method string, msg proto.Message) []byte {
			payload, err := proto.Marshal(msg)
			if err != nil {
				t.Fatal(err)
			}
			body, err := proto.Marshal(&ttrpc.Request{Service: service, Method: method, Payload: payload})
			if err != nil {
				t.Fatal(err)
			}
			hdr := make([]byte, 10)
			binary.BigEndian.PutUint32(hdr[0:4], uint32(len(body)))
			binary.BigEndian.PutUint32(hdr[4:8], stream)
			hdr[8] = 1 // request
			return append(hdr, body...)
		}
		// The stalled client: a Wait on the init first, then State requests
		// whose answers it never reads, enough to fill its socket.
		var out []byte
		out = append(out, frame(1, "Wait", &taskv2.WaitRequest{ID: id})...)
		for i := uint32(0); i < 3000; i++ {
			out = append(out, frame(3+2*i, "State", &taskv2.StateRequest{ID: id})...)
		}
		conn.SetWriteDeadline(time.Now().Add(20 * time.Second))
		if _, err := conn.Write(out); err != nil {
			t.Fatalf("write the stalled client's requests: %v", err)
		}
		// Until the shim's answers stop arriving: its writes to us block.
		raw, _ := conn.(*net.UnixConn).SyscallConn()
		queued := func() (n int) {
			raw.Control(func(fd uintptr) { n, _ = unix.IoctlGetInt(int(fd), unix.SIOCINQ) })
			return n
		}
		for last := -1; ; {
			time.Sleep(500 * time.Millisecond)
			n := queued()
			if n == last {
				break
			}
			last = n
		}
		t.Logf("the stalled client holds %d bytes of answers unread", queued())

		// containerd's own Wait, after the stalled client's, and the exit.
		statusC, err := task.Wait(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := task.Start(ctx); err != nil {
			t.Fatal(err)
		}
		if err := task.Kill(ctx, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		waitTaskStatus(t, ctx, d, id, "STOPPED", 10*time.Second) // the exit is known (event, State)
		select {
		case st := <-statusC:
			if code := st.ExitCode(); code != 137 {
				t.Errorf("containerd's Wait: exit code %d, want 137", code)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("containerd's Wait on %s not answered 10 s after the exit: held behind the stalled client's Wait answer", id)
		}
		// Unblock the shim (the stalled client goes) and clean up.
		conn.Close()
		if _, err := task.Delete(ctx); err != nil {
			t.Errorf("delete: %v", err)
		}
	})
}
