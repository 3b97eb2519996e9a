package service

import (
	"context"
	"log/slog"
	"math"
	"os/exec"

	eventsapi "github.com/example/containerd-shim-example-v2/proto/api/events"
	taskapi "github.com/example/containerd-shim-example-v2/proto/api/runtime/task/v2"
	runcopts "github.com/example/containerd-shim-example-v2/proto/api/types/runc/options"
	tasktypes "github.com/example/containerd-shim-example-v2/proto/api/types/task"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/example/containerd-shim-example-v2/bundle"
	shimio "github.com/example/containerd-shim-example-v2/io"
	"github.com/example/containerd-shim-example-v2/oci"
	"github.com/example/containerd-shim-example-v2/process"
	"github.com/example/containerd-shim-example-v2/proto/codec"
)

// Event topics (containerd's names).
const (
	topicCreate       = "/tasks/create"
	topicStart        = "/tasks/start"
	topicExit         = "/tasks/exit"
	topicDelete       = "/tasks/delete"
	topicExecAdded    = "/tasks/exec-added"
	topicExecStarted  = "/tasks/exec-started"
	topicPaused       = "/tasks/paused"
	topicResumed      = "/tasks/resumed"
	topicOOM          = "/tasks/oom"
	topicCheckpointed = "/tasks/checkpointed"
)

var _ TaskHandlers = (*Service)(nil)

// checkCreate refuses a bad Create request before anything is reserved,
// and reads its runtime options.
func (s *Service) checkCreate(r *taskapi.CreateTaskRequest) (RuntimeOptions, oci.Runtime, error) {
	if err := validateID("container id", r.ID); err != nil {
		return RuntimeOptions{}, oci.Runtime{}, err
	}
	if err := validateBundle(r.Bundle); err != nil {
		return RuntimeOptions{}, oci.Runtime{}, err
	}
	opts, err := DecodeOptions(r.Options)
	if err != nil {
		return RuntimeOptions{}, oci.Runtime{}, err
	}
	if restore := restorePath(r.Checkpoint, opts); restore != "" {
		if err := checkImageDir("checkpoint to restore", restore, true); err != nil {
			return RuntimeOptions{}, oci.Runtime{}, err
		}
	}
	rt := s.runtimeFor(opts)
	if _, err := exec.LookPath(rt.BinaryOrDefault()); err != nil {
		return RuntimeOptions{}, oci.Runtime{}, invalidArgument("OCI runtime binary %q: %v", rt.BinaryOrDefault(), err)
	}
	return opts, rt, nil
}

// Create creates a container and its (not yet started) init process.
func (s *Service) Create(ctx context.Context, r *taskapi.CreateTaskRequest) (*taskapi.CreateTaskResponse, error) {
	opts, rt, err := s.checkCreate(r)
	if err == nil {
		err = s.reserve(r.ID, r.Bundle)
	}
	if err != nil {
		// `start` may have announced this task (Join): containerd follows
		// a failed Create with Delete and Shutdown, and the daemon must not
		// stay for a Create that is not coming again.
		s.cfg.Gate.Forget(r.ID)
		return nil, err
	}
	var c *process.Container
	defer func() { s.release(r.ID, c) }()
	s.warmMigrations(1) // the runtime's create moves the container's init into its cgroups

	mounts := make([]process.Mount, 0, len(r.Rootfs))
	for _, m := range r.Rootfs {
		mounts = append(mounts, process.Mount{Type: m.Type, Source: m.Source, Target: m.Target, Options: m.Options})
	}
	stdio := shimio.Config{Stdin: r.Stdin, Stdout: r.Stdout, Stderr: r.Stderr, Terminal: r.Terminal,
		UID: opts.IoUID, GID: opts.IoGID}
	checkpoint := restorePath(r.Checkpoint, opts)
	c, err = process.Create(ctx, s.cfg.Reaper, process.CreateConfig{
		ID:           r.ID,
		Namespace:    s.cfg.Namespace,
		Bundle:       r.Bundle,
		Rootfs:       mounts,
		Stdio:        stdio,
		Runtime:      rt,
		NoPivot:      opts.NoPivotRoot,
		NoNewKey:     opts.NoNewKeyring,
		Events:       s.containerEvents(),
		SocketDir:    s.cfg.SocketDir,
		OOM:          &s.oom,
		OOMLog:       &s.oomLog,
		Checkpoint:   checkpoint,
		CriuWorkPath: opts.CriuWorkPath,
		StallTimeout: stallTimeoutFor(s.cfg.Namespace, opts.StallTimeout),
		ReaderOwner:  s.cfg.ContainerdStatus,
	}, func(pid int) {
		s.cfg.Events.Publish(topicCreate, &eventsapi.TaskCreate{
			ContainerID: r.ID,
			Bundle:      r.Bundle,
			Rootfs:      r.Rootfs,
			IO:          &eventsapi.TaskIO{Stdin: r.Stdin, Stdout: r.Stdout, Stderr: r.Stderr, Terminal: r.Terminal},
			Checkpoint:  checkpoint, // the options' image too: containerd 1.6 copies it into the request for runc's shim only
			Pid:         uint32(pid),
		})
	})
	if err != nil {
		return nil, err
	}
	// Also for tasks that joined an existing daemon without `start` (a
	// CRI pod's app containers under Task API v3, containerd 2.3+): `delete`
	// and operators find the daemon of any task through these two files.
	if err := bundle.WriteShimPid(r.Bundle, int(s.shimPid)); err != nil {
		slog.Warn("record shim pid", "bundle", r.Bundle, "error", err)
	}
	if s.cfg.Address != "" {
		if err := bundle.EnsureAddress(r.Bundle, s.cfg.Address); err != nil {
			slog.Warn("record shim address", "bundle", r.Bundle, "error", err)
		}
	}
	return &taskapi.CreateTaskResponse{Pid: uint32(c.Init().Pid())}, nil
}

// restorePath is the CRIU image directory a task is restored from:
// containerd's request, or else the task options' CriuImagePath. containerd
// 2.x turns that option into the request's path for every runtime, but 1.6
// and 1.7 only for runtimes named io.containerd.runc*, so a client's
// WithRestoreImagePath would otherwise start the container afresh.
func restorePath(requested string, opts RuntimeOptions) string {
	if requested != "" {
		return requested
	}
	return opts.CriuImagePath
}

// containerEvents are how a container reports what happens on its own.
func (s *Service) containerEvents() process.Events {
	return process.Events{
		Exited: s.publishExit,
		OOM: func(c *process.Container) {
			s.cfg.Events.Publish(topicOOM, &eventsapi.TaskOOM{ContainerID: c.ID})
		},
	}
}

func (s *Service) publishExit(p *process.Process, st process.Snapshot) {
	id := p.ID
	if p.IsInit() {
		id = p.Container().ID
	}
	s.cfg.Events.Publish(topicExit, &eventsapi.TaskExit{
		ContainerID: p.Container().ID,
		ID:          id,
		Pid:         uint32(st.Pid),
		ExitStatus:  uint32(st.ExitCode),
		ExitedAt:    timestamppb.New(st.ExitedAt),
	})
}

// Start starts the init or an added exec.
func (s *Service) Start(ctx context.Context, r *taskapi.StartRequest) (*taskapi.StartResponse, error) {
	_, p, err := s.lookup(r.ID, r.ExecID)
	if err != nil {
		return nil, err
	}
	var pid int
	err = p.Start(ctx, func(started int) {
		pid = started
		if p.IsInit() {
			s.cfg.Events.Publish(topicStart, &eventsapi.TaskStart{ContainerID: r.ID, Pid: uint32(started)})
		} else {
			s.cfg.Events.Publish(topicExecStarted, &eventsapi.TaskExecStarted{ContainerID: r.ID, ExecID: r.ExecID, Pid: uint32(started)})
		}
	})
	if err != nil {
		return nil, err
	}
	return &taskapi.StartResponse{Pid: uint32(pid)}, nil
}

// Delete removes a process that is not running; for the init, the container.
func (s *Service) Delete(ctx context.Context, r *taskapi.DeleteRequest) (*taskapi.DeleteResponse, error) {
	c, p, err := s.lookup(r.ID, r.ExecID)
	if err != nil {
		return nil, err
	}
	var final process.Snapshot
	err = p.Delete(ctx, func(st process.Snapshot) {
		final = st
		if p.IsInit() {
			s.remove(r.ID)
			s.cfg.Events.Publish(topicDelete, &eventsapi.TaskDelete{
				ContainerID: r.ID,
				Pid:         uint32(st.Pid),
				ExitStatus:  uint32(st.ExitCode),
				ExitedAt:    timestamppb.New(st.ExitedAt),
			})
		}
	})
	if err != nil {
		return nil, err
	}
	if p.IsInit() {
		// Before the answer: an upgrade's pause waits for it, then checks.
		_ = s.stillLeaving(c)
		if s.cfg.TaskGone != nil {
			s.cfg.TaskGone()
		}
	}
	return &taskapi.DeleteResponse{Pid: uint32(final.Pid), ExitStatus: uint32(final.ExitCode), ExitedAt: timestamppb.New(final.ExitedAt)}, nil
}

// Exec adds (does not start) a process to a container.
func (s *Service) Exec(ctx context.Context, r *taskapi.ExecProcessRequest) (*emptypb.Empty, error) {
	if err := validateExecID(r.ID, r.ExecID); err != nil {
		return nil, err
	}
	c, err := s.container(r.ID)
	if err != nil {
		return nil, err
	}
	if r.Spec == nil {
		return nil, invalidArgument("exec %q: no process spec", r.ExecID)
	}
	stdio := shimio.Config{Stdin: r.Stdin, Stdout: r.Stdout, Stderr: r.Stderr, Terminal: r.Terminal}
	if _, err := c.Exec(r.ExecID, r.Spec.GetValue(), stdio); err != nil {
		return nil, err
	}
	s.warmMigrations(0) // Start's runtime exec joins the container's cgroups
	s.cfg.Events.Publish(topicExecAdded, &eventsapi.TaskExecAdded{ContainerID: r.ID, ExecID: r.ExecID})
	return empty, nil
}

// Kill signals a process (or, with all, every process of the container).
func (s *Service) Kill(ctx context.Context, r *taskapi.KillRequest) (*emptypb.Empty, error) {
	_, p, err := s.lookup(r.ID, r.ExecID)
	if err != nil {
		return nil, err
	}
	// Signal 0 is kill(2)'s existence probe: nothing is delivered, a gone
	// process is NotFound (the stock shim passes it to runc the same way).
	if r.Signal > 64 {
		return nil, invalidArgument("signal %d is not a valid signal", r.Signal)
	}
	if err := p.Kill(ctx, int(r.Signal), r.All); err != nil {
		return nil, err
	}
	return empty, nil
}

// Wait blocks until the process exits.
func (s *Service) Wait(ctx context.Context, r *taskapi.WaitRequest) (*taskapi.WaitResponse, error) {
	_, p, err := s.lookup(r.ID, r.ExecID)
	if err != nil {
		return nil, err
	}
	st, err := p.Wait(ctx)
	if err != nil {
		return nil, err
	}
	return waitResponse(st), nil
}

// WaitLater is Wait answered when the process exits, without a goroutine
// parked until then (the daemon's server calls it; see Register). CRI
// keeps a Wait open for every container it runs, so a parked Wait was a
// goroutine stack per container for the container's whole life. abandon
// withdraws the registration when containerd hangs up first.
func (s *Service) WaitLater(r *taskapi.WaitRequest, answer func(*taskapi.WaitResponse, error)) (abandon func()) {
	_, p, err := s.lookup(r.ID, r.ExecID)
	if err != nil {
		answer(nil, err)
		return nil
	}
	withdraw := p.OnExit(func(st process.Snapshot) { answer(waitResponse(st), nil) })
	return func() { withdraw() }
}

func waitResponse(st process.Snapshot) *taskapi.WaitResponse {
	return &taskapi.WaitResponse{ExitStatus: uint32(st.ExitCode), ExitedAt: timestamppb.New(st.ExitedAt)}
}

// State reports a process's state.
func (s *Service) State(ctx context.Context, r *taskapi.StateRequest) (*taskapi.StateResponse, error) {
	c, p, err := s.lookup(r.ID, r.ExecID)
	if err != nil {
		return nil, err
	}
	st := p.State()
	id := r.ExecID
	if p.IsInit() {
		id = r.ID
	}
	status := wireStatus(st.Status)
	if st.Status == process.Running && c.Pausing() {
		// PROTOCOL.md §3.3: a container being paused, and its running
		// execs, are pausing until the freeze has succeeded.
		status = tasktypes.Status_PAUSING
	}
	return &taskapi.StateResponse{
		ID:         id,
		Bundle:     c.Bundle,
		Pid:        uint32(st.Pid),
		Status:     status,
		Stdin:      p.Stdio.Stdin,
		Stdout:     p.Stdio.Stdout,
		Stderr:     p.Stdio.Stderr,
		Terminal:   p.Stdio.Terminal,
		ExitStatus: uint32(st.ExitCode),
		ExitedAt:   timestamppb.New(st.ExitedAt),
		ExecID:     r.ExecID,
	}, nil
}

func wireStatus(s process.Status) tasktypes.Status {
	switch s {
	case process.Created:
		return tasktypes.Status_CREATED
	case process.Running:
		return tasktypes.Status_RUNNING
	case process.Paused:
		return tasktypes.Status_PAUSED
	case process.Stopped, process.Deleted:
		return tasktypes.Status_STOPPED
	}
	return tasktypes.Status_UNKNOWN
}

// Pids lists the container's processes; execs carry their exec id.
func (s *Service) Pids(ctx context.Context, r *taskapi.PidsRequest) (*taskapi.PidsResponse, error) {
	c, err := s.container(r.ID)
	if err != nil {
		if s.cfg.SandboxPid != nil {
			if pid, ok := s.cfg.SandboxPid(r.ID); ok {
				return &taskapi.PidsResponse{Processes: []*tasktypes.ProcessInfo{{Pid: uint32(pid)}}}, nil
			}
		}
		return nil, err
	}
	pids, err := c.Pids(ctx)
	if err != nil {
		return nil, err
	}
	execByPid := make(map[int]string)
	for _, e := range c.Execs() {
		if pid := e.Pid(); pid > 0 {
			execByPid[pid] = e.ID
		}
	}
	resp := &taskapi.PidsResponse{Processes: make([]*tasktypes.ProcessInfo, 0, len(pids))}
	for _, pid := range pids {
		info := &tasktypes.ProcessInfo{Pid: uint32(pid)}
		if execID, ok := execByPid[pid]; ok {
			if v, err := codec.Marshal(&runcopts.ProcessDetails{ExecID: execID}); err == nil {
				info.Info = &anypb.Any{TypeUrl: "containerd.runc.v1.ProcessDetails", Value: v}
			}
		}
		resp.Processes = append(resp.Processes, info)
	}
	return resp, nil
}

// Pause freezes the container.
func (s *Service) Pause(ctx context.Context, r *taskapi.PauseRequest) (*emptypb.Empty, error) {
	c, err := s.container(r.ID)
	if err != nil {
		return nil, err
	}
	err = c.Pause(ctx, func() { s.cfg.Events.Publish(topicPaused, &eventsapi.TaskPaused{ContainerID: r.ID}) })
	if err != nil {
		return nil, err
	}
	return empty, nil
}

// Resume thaws the container.
func (s *Service) Resume(ctx context.Context, r *taskapi.ResumeRequest) (*emptypb.Empty, error) {
	c, err := s.container(r.ID)
	if err != nil {
		return nil, err
	}
	err = c.Resume(ctx, func() { s.cfg.Events.Publish(topicResumed, &eventsapi.TaskResumed{ContainerID: r.ID}) })
	if err != nil {
		return nil, err
	}
	return empty, nil
}

// Checkpoint dumps the container with CRIU (through the OCI runtime).
func (s *Service) Checkpoint(ctx context.Context, r *taskapi.CheckpointTaskRequest) (*emptypb.Empty, error) {
	c, err := s.container(r.ID)
	if err != nil {
		return nil, err
	}
	opts, err := checkpointOptions(r)
	if err != nil {
		return nil, err
	}
	err = c.Checkpoint(ctx, opts, func() {
		s.cfg.Events.Publish(topicCheckpointed, &eventsapi.TaskCheckpointed{ContainerID: r.ID, Checkpoint: opts.ImagePath})
	})
	if err != nil {
		return nil, err
	}
	return empty, nil
}

// ResizePty sets a terminal's size; a process without a terminal ignores it.
func (s *Service) ResizePty(ctx context.Context, r *taskapi.ResizePtyRequest) (*emptypb.Empty, error) {
	_, p, err := s.lookup(r.ID, r.ExecID)
	if err != nil {
		return nil, err
	}
	if r.Width > math.MaxUint16 || r.Height > math.MaxUint16 {
		// The kernel's window size holds 16 bits; cut down, 65536 columns
		// would become 0.
		return nil, invalidArgument("terminal size %dx%d: at most %d each", r.Width, r.Height, math.MaxUint16)
	}
	if err := p.Resize(r.Width, r.Height); err != nil {
		return nil, err
	}
	return empty, nil
}

// CloseIO ends a process's stdin.
func (s *Service) CloseIO(ctx context.Context, r *taskapi.CloseIORequest) (*emptypb.Empty, error) {
	_, p, err := s.lookup(r.ID, r.ExecID)
	if err != nil {
		return nil, err
	}
	p.CloseStdin()
	return empty, nil
}

// Update changes the container's resource limits.
func (s *Service) Update(ctx context.Context, r *taskapi.UpdateTaskRequest) (*emptypb.Empty, error) {
	c, err := s.container(r.ID)
	if err != nil {
		return nil, err
	}
	if r.Resources == nil {
		return nil, invalidArgument("update %s: no resources", r.ID)
	}
	if err := c.Update(ctx, r.Resources.GetValue()); err != nil {
		return nil, err
	}
	return empty, nil
}

// Stats returns the container's cgroup metrics (v1 or v2 type).
func (s *Service) Stats(ctx context.Context, r *taskapi.StatsRequest) (*taskapi.StatsResponse, error) {
	c, err := s.container(r.ID)
	if err != nil {
		return nil, err
	}
	v, typeURL, err := c.Stats()
	if err != nil {
		return nil, err
	}
	return &taskapi.StatsResponse{Stats: &anypb.Any{TypeUrl: typeURL, Value: v}}, nil
}

// Connect answers containerd's liveness probe. It never fails: an unknown id
// gets task pid 0.
func (s *Service) Connect(ctx context.Context, r *taskapi.ConnectRequest) (*taskapi.ConnectResponse, error) {
	resp := &taskapi.ConnectResponse{ShimPid: s.shimPid}
	if c, err := s.container(r.ID); err == nil {
		resp.TaskPid = uint32(c.Init().Pid())
	}
	return resp, nil
}
