package direct

import (
	"context"
	"fmt"

	taskv2 "github.com/containerd/containerd/api/runtime/task/v2"
	taskv3 "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/ttrpc"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/emptypb"
)

// TaskAPI is the task service as a manager calls it, in the v3 Go types
// whatever the protocol version on the wire, so one scenario runs against
// both. The v2 and v3 messages are identical on the wire (PROTOCOL.md §3.1).
type TaskAPI = taskv3.TTRPCTaskService

// Task service names on the wire.
const (
	TaskServiceV2 = "containerd.task.v2.Task"
	TaskServiceV3 = "containerd.task.v3.Task"
)

// NewTaskAPI returns a client of containerd.task.v<version>.Task. Version 2
// goes through containerd's own generated v2 client (what containerd 1.6 and
// 1.7 use); requests and responses are converted by their wire bytes.
func NewTaskAPI(c *ttrpc.Client, version int) (TaskAPI, error) {
	switch version {
	case 3:
		return taskv3.NewTTRPCTaskClient(c), nil
	case 2:
		return v2Task{taskv2.NewTaskClient(c)}, nil
	}
	return nil, fmt.Errorf("no task API version %d", version)
}

// v2Task speaks containerd.task.v2.Task.
type v2Task struct{ c taskv2.TaskService }

// through re-encodes the v3 request as the v2 one, calls, and re-encodes the
// v2 response as the v3 one. Equal wire bytes are the point: a field that
// did not survive the trip would be a difference between the protocols.
func through[In, V2In, V2Out, Out proto.Message](ctx context.Context, in In, v2in V2In, call func(context.Context, V2In) (V2Out, error), out Out) (Out, error) {
	if err := convert(in, v2in); err != nil {
		return out, err
	}
	resp, err := call(ctx, v2in)
	if err != nil {
		var zero Out
		return zero, err
	}
	if err := convert(resp, out); err != nil {
		return out, err
	}
	return out, nil
}

func convert(from, to proto.Message) error {
	b, err := proto.Marshal(from)
	if err != nil {
		return fmt.Errorf("encode %T: %w", from, err)
	}
	if err := proto.Unmarshal(b, to); err != nil {
		return fmt.Errorf("decode %T: %w", to, err)
	}
	return nil
}

func (t v2Task) State(ctx context.Context, r *taskv3.StateRequest) (*taskv3.StateResponse, error) {
	return through(ctx, r, &taskv2.StateRequest{}, t.c.State, &taskv3.StateResponse{})
}

func (t v2Task) Create(ctx context.Context, r *taskv3.CreateTaskRequest) (*taskv3.CreateTaskResponse, error) {
	return through(ctx, r, &taskv2.CreateTaskRequest{}, t.c.Create, &taskv3.CreateTaskResponse{})
}

func (t v2Task) Start(ctx context.Context, r *taskv3.StartRequest) (*taskv3.StartResponse, error) {
	return through(ctx, r, &taskv2.StartRequest{}, t.c.Start, &taskv3.StartResponse{})
}

func (t v2Task) Delete(ctx context.Context, r *taskv3.DeleteRequest) (*taskv3.DeleteResponse, error) {
	return through(ctx, r, &taskv2.DeleteRequest{}, t.c.Delete, &taskv3.DeleteResponse{})
}

func (t v2Task) Pids(ctx context.Context, r *taskv3.PidsRequest) (*taskv3.PidsResponse, error) {
	return through(ctx, r, &taskv2.PidsRequest{}, t.c.Pids, &taskv3.PidsResponse{})
}

func (t v2Task) Pause(ctx context.Context, r *taskv3.PauseRequest) (*emptypb.Empty, error) {
	return through(ctx, r, &taskv2.PauseRequest{}, t.c.Pause, &emptypb.Empty{})
}

func (t v2Task) Resume(ctx context.Context, r *taskv3.ResumeRequest) (*emptypb.Empty, error) {
	return through(ctx, r, &taskv2.ResumeRequest{}, t.c.Resume, &emptypb.Empty{})
}

func (t v2Task) Checkpoint(ctx context.Context, r *taskv3.CheckpointTaskRequest) (*emptypb.Empty, error) {
	return through(ctx, r, &taskv2.CheckpointTaskRequest{}, t.c.Checkpoint, &emptypb.Empty{})
}

func (t v2Task) Kill(ctx context.Context, r *taskv3.KillRequest) (*emptypb.Empty, error) {
	return through(ctx, r, &taskv2.KillRequest{}, t.c.Kill, &emptypb.Empty{})
}

func (t v2Task) Exec(ctx context.Context, r *taskv3.ExecProcessRequest) (*emptypb.Empty, error) {
	return through(ctx, r, &taskv2.ExecProcessRequest{}, t.c.Exec, &emptypb.Empty{})
}

func (t v2Task) ResizePty(ctx context.Context, r *taskv3.ResizePtyRequest) (*emptypb.Empty, error) {
	return through(ctx, r, &taskv2.ResizePtyRequest{}, t.c.ResizePty, &emptypb.Empty{})
}

func (t v2Task) CloseIO(ctx context.Context, r *taskv3.CloseIORequest) (*emptypb.Empty, error) {
	return through(ctx, r, &taskv2.CloseIORequest{}, t.c.CloseIO, &emptypb.Empty{})
}

func (t v2Task) Update(ctx context.Context, r *taskv3.UpdateTaskRequest) (*emptypb.Empty, error) {
	return through(ctx, r, &taskv2.UpdateTaskRequest{}, t.c.Update, &emptypb.Empty{})
}

func (t v2Task) Wait(ctx context.Context, r *taskv3.WaitRequest) (*taskv3.WaitResponse, error) {
	return through(ctx, r, &taskv2.WaitRequest{}, t.c.Wait, &taskv3.WaitResponse{})
}

func (t v2Task) Stats(ctx context.Context, r *taskv3.StatsRequest) (*taskv3.StatsResponse, error) {
	return through(ctx, r, &taskv2.StatsRequest{}, t.c.Stats, &taskv3.StatsResponse{})
}

func (t v2Task) Connect(ctx context.Context, r *taskv3.ConnectRequest) (*taskv3.ConnectResponse, error) {
	return through(ctx, r, &taskv2.ConnectRequest{}, t.c.Connect, &taskv3.ConnectResponse{})
}

func (t v2Task) Shutdown(ctx context.Context, r *taskv3.ShutdownRequest) (*emptypb.Empty, error) {
	return through(ctx, r, &taskv2.ShutdownRequest{}, t.c.Shutdown, &emptypb.Empty{})
}
