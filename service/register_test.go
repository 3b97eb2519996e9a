package service

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"testing"
	"time"

	cdtaskv2 "github.com/containerd/containerd/api/runtime/task/v2"
	cdtasktypes "github.com/containerd/containerd/api/types/task"
	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/containerd/ttrpc"
	"google.golang.org/protobuf/types/known/timestamppb"

	taskapi "github.com/example/containerd-shim-example-v2/proto/api/runtime/task/v2"
	tasktypes "github.com/example/containerd-shim-example-v2/proto/api/types/task"
	"github.com/example/containerd-shim-example-v2/ttrpcserver"
)

// Metrics and status queries are polls under both task API versions and the Sandbox API;
// anything that changes a task or pod is not, nor a name from another service.
func TestIsPoll(t *testing.T) {
	for _, m := range []string{
		"/containerd.task.v2.Task/Stats", "/containerd.task.v3.Task/Stats",
		"/containerd.task.v3.Task/State", "/containerd.task.v2.Task/Connect",
		"/containerd.runtime.sandbox.v1.Sandbox/SandboxMetrics",
		"/containerd.runtime.sandbox.v1.Sandbox/SandboxStatus",
		"/containerd.runtime.sandbox.v1.Sandbox/PingSandbox",
	} {
		if !IsPoll(m) {
			t.Errorf("IsPoll(%q) = false, want true", m)
		}
	}
	for _, m := range []string{
		"/containerd.task.v2.Task/Create", "/containerd.task.v3.Task/Start",
		"/containerd.task.v3.Task/Exec", "/containerd.task.v2.Task/Kill",
		"/containerd.task.v3.Task/Delete", "/containerd.task.v3.Task/Wait",
		"/containerd.runtime.sandbox.v1.Sandbox/StartSandbox",
		"/containerd.runtime.sandbox.v1.Sandbox/StopSandbox",
		"/example.introspect.v1.Introspect/Snapshot",
		"/other.Service/Stats", "Stats", "",
	} {
		if IsPoll(m) {
			t.Errorf("IsPoll(%q) = true, want false", m)
		}
	}
}

// taskStub answers State and WaitLater; the other task methods are not
// called here (the nil interface would panic if they were).
type taskStub struct {
	TaskHandlers
}

func (taskStub) State(_ context.Context, r *taskapi.StateRequest) (*taskapi.StateResponse, error) {
	if r.ID == "missing" {
		return nil, fmt.Errorf("container %q: %w", r.ID, errdefs.ErrNotFound)
	}
	return &taskapi.StateResponse{ID: r.ID, ExecID: r.ExecID, Pid: 42, Status: tasktypes.Status_RUNNING,
		ExitStatus: 3, ExitedAt: timestamppb.New(time.Unix(5, 6))}, nil
}

func (taskStub) WaitLater(r *taskapi.WaitRequest, answer func(*taskapi.WaitResponse, error)) func() {
	go answer(&taskapi.WaitResponse{ExitStatus: 7}, nil)
	return func() {}
}

// TestTaskAPIWithContainerdsClient: the task service, registered on the
// shim's server with the shim's own message types (proto/api), answers
// containerd's generated ttrpc client and its types under both service
// names, errors keep their errdefs class, and Wait is answered later.
func TestTaskAPIWithContainerdsClient(t *testing.T) {
	srv := ttrpcserver.New(ttrpcserver.Options{})
	Register(srv, taskStub{})
	sock := filepath.Join(t.TempDir(), "s")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go srv.Serve(ctx, l)
	conn, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	client := ttrpc.NewClient(conn)
	defer client.Close()

	v2 := cdtaskv2.NewTTRPCTaskClient(client)
	st, err := v2.State(ctx, &cdtaskv2.StateRequest{ID: "c1", ExecID: "e1"})
	if err != nil {
		t.Fatalf("State: %v", err)
	}
	if st.ID != "c1" || st.ExecID != "e1" || st.Pid != 42 || st.Status != cdtasktypes.Status_RUNNING ||
		st.ExitStatus != 3 || !st.ExitedAt.AsTime().Equal(time.Unix(5, 6)) {
		t.Fatalf("State = %v", st)
	}
	if _, err := v2.State(ctx, &cdtaskv2.StateRequest{ID: "missing"}); !errdefs.IsNotFound(errgrpc.ToNative(err)) {
		t.Fatalf("State of a missing container: %v, want NotFound", err)
	}
	w, err := v2.Wait(ctx, &cdtaskv2.WaitRequest{ID: "c1"})
	if err != nil || w.ExitStatus != 7 {
		t.Fatalf("Wait = %v, %v", w, err)
	}

	var v3 cdtaskv2.StateResponse
	if err := client.Call(ctx, TaskServiceV3, "State", &cdtaskv2.StateRequest{ID: "c3"}, &v3); err != nil || v3.ID != "c3" {
		t.Fatalf("State under %s = %v, %v", TaskServiceV3, &v3, err)
	}
}
