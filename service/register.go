package service

import (
	"context"

	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/containerd/ttrpc"
	taskapi "github.com/example/containerd-shim-example-v2/proto/api/runtime/task/v2"
	"google.golang.org/protobuf/types/known/emptypb"

	sandboxapi "github.com/example/containerd-shim-example-v2/proto/sandbox/v1"
	"github.com/example/containerd-shim-example-v2/ttrpcserver"
)

// Service names on the wire. The v2 and v3 task protocols carry identical
// messages, so one method table serves both: containerd 1.6/1.7 dial v2, 2.x
// dials v3 or v2 depending on the version the shim announced. Decoding v3
// requests into the v2 Go types also keeps the v3 package (which links gRPC)
// out of the binary.
const (
	TaskServiceV2 = "containerd.task.v2.Task"
	TaskServiceV3 = "containerd.task.v3.Task"
)

// TaskHandlers serve the task API: the methods of containerd's task service,
// whose Wait is served by WaitLater instead (answered when the process
// exits, without a goroutine parked per waited process).
type TaskHandlers interface {
	State(context.Context, *taskapi.StateRequest) (*taskapi.StateResponse, error)
	Create(context.Context, *taskapi.CreateTaskRequest) (*taskapi.CreateTaskResponse, error)
	Start(context.Context, *taskapi.StartRequest) (*taskapi.StartResponse, error)
	Delete(context.Context, *taskapi.DeleteRequest) (*taskapi.DeleteResponse, error)
	Pids(context.Context, *taskapi.PidsRequest) (*taskapi.PidsResponse, error)
	Pause(context.Context, *taskapi.PauseRequest) (*emptypb.Empty, error)
	Resume(context.Context, *taskapi.ResumeRequest) (*emptypb.Empty, error)
	Checkpoint(context.Context, *taskapi.CheckpointTaskRequest) (*emptypb.Empty, error)
	Kill(context.Context, *taskapi.KillRequest) (*emptypb.Empty, error)
	Exec(context.Context, *taskapi.ExecProcessRequest) (*emptypb.Empty, error)
	ResizePty(context.Context, *taskapi.ResizePtyRequest) (*emptypb.Empty, error)
	CloseIO(context.Context, *taskapi.CloseIORequest) (*emptypb.Empty, error)
	Update(context.Context, *taskapi.UpdateTaskRequest) (*emptypb.Empty, error)
	WaitLater(r *taskapi.WaitRequest, answer func(*taskapi.WaitResponse, error)) (abandon func())
	Stats(context.Context, *taskapi.StatsRequest) (*taskapi.StatsResponse, error)
	Connect(context.Context, *taskapi.ConnectRequest) (*taskapi.ConnectResponse, error)
	Shutdown(context.Context, *taskapi.ShutdownRequest) (*emptypb.Empty, error)
}

// Register serves the task API on srv under both service names.
func Register(srv *ttrpcserver.Server, t TaskHandlers) {
	methods := map[string]ttrpc.Method{
		"State":      method(t.State),
		"Create":     method(t.Create),
		"Start":      method(t.Start),
		"Delete":     method(t.Delete),
		"Pids":       method(t.Pids),
		"Pause":      method(t.Pause),
		"Resume":     method(t.Resume),
		"Checkpoint": method(t.Checkpoint),
		"Kill":       method(t.Kill),
		"Exec":       method(t.Exec),
		"ResizePty":  method(t.ResizePty),
		"CloseIO":    method(t.CloseIO),
		"Update":     method(t.Update),
		"Wait":       laterMethod(t.WaitLater),
		"Stats":      method(t.Stats),
		"Connect":    method(t.Connect),
		"Shutdown":   method(t.Shutdown),
	}
	srv.RegisterService(TaskServiceV2, &ttrpc.ServiceDesc{Methods: methods})
	srv.RegisterService(TaskServiceV3, &ttrpc.ServiceDesc{Methods: methods})
}

// IntrospectService is the introspection service's name on the wire
// (proto/introspect/v1).
const IntrospectService = "example.introspect.v1.Introspect"

// RegisterIntrospect serves the introspection service on srv.
func RegisterIntrospect(srv *ttrpcserver.Server, s *Service) {
	srv.RegisterService(IntrospectService, &ttrpc.ServiceDesc{Methods: map[string]ttrpc.Method{
		"Snapshot": method(s.Introspect),
	}})
}

// SandboxService is containerd's Sandbox API on the wire (containerd 2.x, a
// CRI runtime handler with sandboxer = "shim"); the sandbox package serves it.
const SandboxService = "containerd.runtime.sandbox.v1.Sandbox"

// SandboxHandlers serves the Sandbox API.
type SandboxHandlers interface {
	CreateSandbox(context.Context, *sandboxapi.CreateSandboxRequest) (*sandboxapi.CreateSandboxResponse, error)
	StartSandbox(context.Context, *sandboxapi.StartSandboxRequest) (*sandboxapi.StartSandboxResponse, error)
	Platform(context.Context, *sandboxapi.PlatformRequest) (*sandboxapi.PlatformResponse, error)
	StopSandbox(context.Context, *sandboxapi.StopSandboxRequest) (*sandboxapi.StopSandboxResponse, error)
	// WaitSandboxLater serves WaitSandbox as WaitLater serves Wait: answered
	// when the pod stops, without a goroutine parked until then.
	WaitSandboxLater(r *sandboxapi.WaitSandboxRequest, answer func(*sandboxapi.WaitSandboxResponse, error)) (abandon func())
	SandboxStatus(context.Context, *sandboxapi.SandboxStatusRequest) (*sandboxapi.SandboxStatusResponse, error)
	PingSandbox(context.Context, *sandboxapi.PingRequest) (*sandboxapi.PingResponse, error)
	ShutdownSandbox(context.Context, *sandboxapi.ShutdownSandboxRequest) (*sandboxapi.ShutdownSandboxResponse, error)
	SandboxMetrics(context.Context, *sandboxapi.SandboxMetricsRequest) (*sandboxapi.SandboxMetricsResponse, error)
	UpdateSandbox(context.Context, *sandboxapi.UpdateSandboxRequest) (*sandboxapi.UpdateSandboxResponse, error)
}

// RegisterSandbox serves the Sandbox API on srv.
func RegisterSandbox(srv *ttrpcserver.Server, h SandboxHandlers) {
	srv.RegisterService(SandboxService, &ttrpc.ServiceDesc{Methods: map[string]ttrpc.Method{
		"CreateSandbox":   method(h.CreateSandbox),
		"StartSandbox":    method(h.StartSandbox),
		"Platform":        method(h.Platform),
		"StopSandbox":     method(h.StopSandbox),
		"WaitSandbox":     laterMethod(h.WaitSandboxLater),
		"SandboxStatus":   method(h.SandboxStatus),
		"PingSandbox":     method(h.PingSandbox),
		"ShutdownSandbox": method(h.ShutdownSandbox),
		"SandboxMetrics":  method(h.SandboxMetrics),
		"UpdateSandbox":   method(h.UpdateSandbox),
	}})
}

// method adapts a typed handler to ttrpc's dispatch, and is the one place
// (with laterMethod) where Go errors become wire status codes (errdefs
// classes -> gRPC codes).
func method[Req any, Resp any, PReq interface{ *Req }](h func(context.Context, PReq) (Resp, error)) ttrpc.Method {
	return func(ctx context.Context, unmarshal func(any) error) (any, error) {
		req, err := decode[Req, PReq](unmarshal)
		if err != nil {
			return nil, err
		}
		resp, err := h(ctx, req)
		if err != nil {
			return nil, wireError(err)
		}
		return resp, nil
	}
}

// laterMethod adapts a handler that answers when it can (a long poll) to
// ttrpcserver.Later: it returns a function that withdraws its registration
// if containerd hangs up first.
func laterMethod[Req any, Resp any, PReq interface{ *Req }](h func(PReq, func(Resp, error)) (abandon func())) ttrpc.Method {
	return func(_ context.Context, unmarshal func(any) error) (any, error) {
		req, err := decode[Req, PReq](unmarshal)
		if err != nil {
			return nil, err
		}
		return ttrpcserver.Later(func(answer func(any, error)) func() {
			return h(req, func(resp Resp, err error) {
				if err != nil {
					answer(nil, wireError(err))
					return
				}
				answer(resp, nil)
			})
		}), nil
	}
}

func decode[Req any, PReq interface{ *Req }](unmarshal func(any) error) (PReq, error) {
	req := PReq(new(Req))
	if err := unmarshal(req); err != nil {
		return nil, errgrpc.ToGRPC(invalidArgument("decode request: %v", err))
	}
	return req, nil
}

var empty = &emptypb.Empty{}

// pollMethods are the read-only requests containerd repeats on a timer for as long as a
// task or pod lives: containerd 2.4's CRI stats collector asks every shim for its pods'
// and containers' metrics every second (stats_collect_period), and status checks ask for
// state. They change nothing, so they are not activity the daemon should wait out
// before trimming its memory.
var pollMethods = func() map[string]bool {
	m := map[string]bool{}
	for _, task := range []string{TaskServiceV2, TaskServiceV3} { // one method table under both names
		for _, method := range []string{"State", "Stats", "Pids", "Connect"} {
			m["/"+task+"/"+method] = true
		}
	}
	for _, method := range []string{"SandboxMetrics", "SandboxStatus", "PingSandbox", "Platform"} {
		m["/"+SandboxService+"/"+method] = true
	}
	return m
}()

// IsPoll reports whether a request, by its ttrpc full method name ("/service/method"),
// is a periodic read-only query (see pollMethods) rather than work.
func IsPoll(fullMethod string) bool { return pollMethods[fullMethod] }
