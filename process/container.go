// Package process is where a container's processes live and die: it creates
// them through the OCI runtime, keeps each one's state, receives its exit from
// the reaper, and tells its owner (the service) about every transition in the
// order containerd must see them.
//
// It knows nothing of containerd's wire format: callers pass callbacks that
// publish what they need, and those callbacks run under the process's lock so
// a process's start is always reported before its exit.
package process

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/example/containerd-shim-example-v2/bundle"
	"github.com/example/containerd-shim-example-v2/internal/condwait"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/protobuf/proto"

	"github.com/example/containerd-shim-example-v2/cgroup"
	shimio "github.com/example/containerd-shim-example-v2/io"
	"github.com/example/containerd-shim-example-v2/oci"
	"github.com/example/containerd-shim-example-v2/reaper"
)

// Named limits. Each bounds a wait that must never become a hang.
const (
	// IODrainTimeout bounds how long Delete waits for a process's output to
	// reach the client after it exited. An orphaned grandchild can hold the
	// pipe open forever; containerd's own stock shim waits 10 s.
	IODrainTimeout = 10 * time.Second
	// execsBeforeInitTimeout bounds how long an init's exit waits for the
	// exits of its container's execs to be reported first. The kernel kills
	// every process of a PID namespace when its init dies, so this is normally
	// milliseconds.
	execsBeforeInitTimeout = 5 * time.Second
	// deleteCreatedTimeout bounds the wait for a created-but-never-started
	// init to be reaped after the runtime killed it.
	deleteCreatedTimeout = 10 * time.Second
	// cleanupTimeout bounds runtime calls made while undoing a failed create.
	cleanupTimeout = 10 * time.Second
)

// Events are the callbacks through which a container reports transitions that
// happen on their own (exits). They run in order, under the process's lock,
// so they must not call back into the process: everything they need is in
// the snapshot.
type Events struct {
	Exited func(p *Process, final Snapshot)
	// OOM reports that the kernel OOM-killed in the container's cgroup. It
	// is always reported before the init's exit when that exit was the kill.
	OOM func(c *Container)
}

// CreateConfig describes a container to create.
type CreateConfig struct {
	ID        string
	Namespace string // for loggers' CONTAINER_NAMESPACE
	Bundle    string // absolute
	Rootfs    []Mount
	Stdio     shimio.Config
	Runtime   oci.Runtime // binary, root, cgroup driver; log path and reaper are set by Create
	NoPivot   bool
	NoNewKey  bool
	Events    Events
	// Terminals: where console sockets go.
	SocketDir string
	// OOM watches the daemon's cgroups for OOM kills (nil: no OOM events).
	OOM *cgroup.OOMWatcher
	// Checkpoint, when set, is a CRIU image to restore the container from at
	// Start instead of creating it afresh.
	Checkpoint   string
	CriuWorkPath string
}

// Container is one OCI container: its runtime, its init and its execs.
//
// Locking: mu guards execs, runningExecs, initReaped; execsIdle is signalled
// (with mu) when runningExecs drops to zero. A Process's own mutex is never
// acquired while holding mu.
type Container struct {
	ID        string
	Bundle    string
	Namespace string

	rt          oci.Runtime
	events      Events
	oomWatcher  *cgroup.OOMWatcher
	socketDir   string
	ownPIDNS    bool // the spec gives the container a PID namespace of its own
	rootfsMount bool // the shim mounted <bundle>/rootfs and must unmount it

	init *Process

	cg      *cgroup.Cgroup // nil when the init's cgroup could not be found
	stopOOM func()

	mu           sync.Mutex
	execsIdle    *sync.Cond
	execs        map[string]*Process
	runningExecs int
	initReaped   bool
	oomSeen      uint64            // OOM kills already reported (or present at create)
	oomAtCreate  uint64            // OOM kills the cgroup had already counted at create
	limitMarks   cgroup.LimitMarks // the cgroup's own-limit counters at the last OOM (or at create)
	oomScope     string            // where the last reported OOM kill's limit was hit
}

// Create mounts the rootfs, opens stdio and has the runtime create the
// container. onCreated runs with the init's PID before any exit of it can be
// reported. On error nothing is left behind.
func Create(ctx context.Context, r *reaper.Reaper, cfg CreateConfig, onCreated func(pid int)) (_ *Container, retErr error) {
	spec, err := readSpec(cfg.Bundle)
	if err != nil {
		return nil, err
	}
	c := &Container{
		ID:         cfg.ID,
		Bundle:     cfg.Bundle,
		Namespace:  cfg.Namespace,
		rt:         cfg.Runtime,
		events:     cfg.Events,
		oomWatcher: cfg.OOM,
		socketDir:  cfg.SocketDir,
		ownPIDNS:   hasOwnPIDNamespace(spec),
		execs:      make(map[string]*Process),
	}
	c.execsIdle = sync.NewCond(&c.mu)
	c.rt.Reaper = r
	c.rt.LogPath = filepath.Join(cfg.Bundle, "log.json")
	c.rt.Dir = cfg.Bundle
	if err := c.rt.Save(cfg.Bundle); err != nil {
		return nil, err
	}

	rootfs := filepath.Join(cfg.Bundle, bundle.RootfsDir)
	if len(cfg.Rootfs) > 0 {
		if err := os.MkdirAll(rootfs, 0o711); err != nil {
			return nil, fmt.Errorf("create rootfs directory: %w", err)
		}
		if err := mountRootfs(rootfs, cfg.Rootfs); err != nil {
			return nil, err
		}
		c.rootfsMount = true
		defer func() {
			if retErr != nil {
				_ = unmountAll(rootfs)
			}
		}()
	}

	pipes, err := shimio.Open(cfg.Stdio, c.ioEnv(c.ID))
	if err != nil {
		return nil, err
	}
	p := newProcess(c, "", cfg.Stdio, pipes)
	c.init = p
	if cfg.Checkpoint != "" {
		// Nothing runs until Start restores it.
		p.restore = &oci.RestoreOpts{
			CheckpointOpts: oci.CheckpointOpts{ImagePath: cfg.Checkpoint, WorkPath: cfg.CriuWorkPath},
			PidFile:        filepath.Join(cfg.Bundle, bundle.InitPidFile),
			NoPivot:        cfg.NoPivot,
		}
		p.mu.Lock()
		onCreated(0)
		p.mu.Unlock()
		return c, nil
	}

	pidFile := filepath.Join(cfg.Bundle, bundle.InitPidFile)
	pid, exitc, err := c.launch(pipes, pidFile, func(stdio oci.Stdio, consoleSocket string) error {
		return c.rt.Create(ctx, c.ID, cfg.Bundle, oci.CreateOpts{
			PidFile:       pidFile,
			ConsoleSocket: consoleSocket,
			NoPivot:       cfg.NoPivot,
			NoNewKeyring:  cfg.NoNewKey,
			Stdio:         stdio,
		})
	})
	if err != nil {
		pipes.Close()
		c.destroyRuntimeState()
		return nil, fmt.Errorf("create container %s: %w", c.ID, err)
	}
	p.pid = pid
	c.watchCgroup(p.pid)

	p.mu.Lock()
	onCreated(p.pid)
	p.mu.Unlock()
	c.rt.Reaper.Then(p.pid, exitc, c.initExited)
	return c, nil
}

// launch runs a runtime command that starts a process of the container
// (create, restore, exec) with the runtime ends of pipes as its stdio and a
// console socket when it has a terminal, then reads the PID it wrote to
// pidFile. A reaper window is open from before the command, so an exit of the
// new process before its PID is known is kept and delivered on the returned
// channel. On success the shim's copies of the runtime's stdio are released.
func (c *Container) launch(pipes *shimio.Pipes, pidFile string, run func(stdio oci.Stdio, consoleSocket string) error) (int, <-chan reaper.Exit, error) {
	in, out, errf := pipes.RuntimeFiles()
	w := c.rt.Reaper.Open()
	defer w.Close()
	err := c.withConsole(pipes, func(consoleSocket string) error {
		return run(oci.Stdio{In: in, Out: out, Err: errf}, consoleSocket)
	})
	var pid int
	if err == nil {
		pid, err = oci.ReadPidFile(pidFile)
	}
	if err != nil {
		return 0, nil, err
	}
	exitc := w.Claim(pid)
	pipes.ReleaseRuntimeFiles()
	return pid, exitc, nil
}

// watchCgroup finds the init's cgroup and starts watching it for OOM kills
// (at create, so even an OOM during start is seen). A container without a
// findable cgroup still runs; it just has no stats or OOM events.
func (c *Container) watchCgroup(pid int) {
	c.watchCgroupFrom(pid, true)
}

// watchCgroupFrom is watchCgroup; fresh counts the cgroup's OOM kills so far
// as seen (a new container), where a container handed over by an upgrade
// keeps the counts it had.
func (c *Container) watchCgroupFrom(pid int, fresh bool) {
	cg, err := cgroup.ForPid(cgroup.DefaultRoot, pid)
	if err != nil {
		slog.Warn("container cgroup not found; no stats or OOM events", "container", c.ID, "error", err)
		return
	}
	c.cg = cg
	if fresh {
		c.oomSeen, _ = cg.OOMKills()
		c.oomAtCreate = c.oomSeen
	}
	c.limitMarks = cg.LimitMarks()
	if c.events.OOM == nil || c.oomWatcher == nil {
		return
	}
	if stop, err := c.oomWatcher.Watch(cg, c.oomNotified); err == nil {
		c.stopOOM = stop
	} else {
		slog.Warn("cannot watch for OOM kills", "container", c.ID, "error", err)
	}
}

// oomNotified handles the cgroup's OOM notification.
func (c *Container) oomNotified() { c.reportOOM(true) }

// reportOOMBeforeExit reports an OOM kill the notification has not (yet)
// delivered, so that an OOM-killed init's /tasks/oom precedes its exit.
func (c *Container) reportOOMBeforeExit() {
	if c.cg == nil || c.events.OOM == nil {
		return
	}
	c.reportOOM(false)
}

// reportOOM publishes an OOM kill not reported yet, found through the
// cgroup's notification (notified) or on the exit path.
func (c *Container) reportOOM(notified bool) {
	kills, err := c.cg.OOMKills()
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case notified && c.initReaped:
		return // the exit path reports it, in order
	case err == nil && kills > c.oomSeen:
		c.oomSeen = kills
	case notified && !c.cg.V2:
		// v1 signals the OOM itself, possibly before the kill is counted:
		// count it now so the exit path does not report it twice.
		c.oomSeen++
	default:
		return // v2: memory.events changed, but not oom_kill
	}
	c.noteOOMScope()
	c.events.OOM(c)
}

// noteOOMScope records (and logs) whether the OOM kill just seen came from the
// container's own memory limit or from a cgroup above it: containerd's OOM
// event cannot say, and "OOMKilled" under a pod or node limit is a different
// problem from one under the container's limit. Called with c.mu held.
func (c *Container) noteOOMScope() {
	c.oomScope, c.limitMarks = c.cg.OOMScope(c.limitMarks)
	slog.Warn("OOM kill in container", "container", c.ID, "limit", c.oomScope, "kills", c.oomSeen)
}

// OOMInfo returns how many OOM kills the container's cgroup has seen since it
// was created, and where the last one's limit was hit ("" before any).
func (c *Container) OOMInfo() (kills uint64, scope string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cg == nil {
		return 0, ""
	}
	return c.oomSeen - c.oomAtCreate, c.oomScope
}

// Checkpoint dumps the container with CRIU into opts.ImagePath. Unless
// LeaveRunning, the container stops afterwards (its exit is reported as usual).
func (c *Container) Checkpoint(ctx context.Context, opts oci.CheckpointOpts) error {
	if err := c.init.checkOp(OpCheckpoint); err != nil {
		return err
	}
	if opts.ImagePath == "" {
		return fmt.Errorf("checkpoint %s: no image path: %w", c.ID, errdefs.ErrInvalidArgument)
	}
	work := opts.WorkPath
	if work == "" {
		work = filepath.Join(c.Bundle, "criu-work")
		opts.WorkPath = work
		defer os.RemoveAll(work)
	}
	if err := c.rt.Checkpoint(ctx, c.ID, opts); err != nil {
		// CRIU's own log says why; keep it beside the bundle and quote it.
		data, _ := os.ReadFile(filepath.Join(work, "dump.log"))
		if data != nil {
			_ = os.WriteFile(filepath.Join(c.Bundle, "criu-dump.log"), data, 0o600)
		}
		return fmt.Errorf("checkpoint %s: %w%s", c.ID, err, criuLogTail(data))
	}
	return nil
}

// criuLogTail returns the last error lines of a CRIU log, for an error message.
func criuLogTail(data []byte) string {
	var errs []string
	for _, line := range strings.Split(string(data), "\n") {
		if strings.Contains(line, "Error") || strings.Contains(line, "error") {
			errs = append(errs, strings.TrimSpace(line))
		}
	}
	if len(errs) > 3 {
		errs = errs[len(errs)-3:]
	}
	if len(errs) == 0 {
		return ""
	}
	return " (criu: " + strings.Join(errs, "; ") + ")"
}

// Stats returns the container's cgroup statistics and their type URL.
func (c *Container) Stats() (proto.Message, string, error) {
	if c.cg == nil {
		return nil, "", fmt.Errorf("container %s: cgroup does not exist: %w", c.ID, errdefs.ErrNotFound)
	}
	if c.cg.V2 {
		m, err := c.cg.StatsV2()
		if err != nil {
			return nil, "", fmt.Errorf("stats of %s: %w", c.ID, err)
		}
		return m, cgroup.MetricsV2, nil
	}
	m, err := c.cg.StatsV1()
	if err != nil {
		return nil, "", fmt.Errorf("stats of %s: %w", c.ID, err)
	}
	return m, cgroup.MetricsV1, nil
}

// ioEnv is what stdio needs to know of one of the container's processes.
func (c *Container) ioEnv(processID string) shimio.Env {
	return shimio.Env{
		ProcessID: processID,
		Namespace: c.Namespace,
		Spawn: func(cmd *exec.Cmd) (<-chan int, error) {
			exitc, err := c.rt.Reaper.Start(cmd)
			if err != nil {
				return nil, err
			}
			status := make(chan int, 1)
			go func() { status <- (<-exitc).Status }()
			return status, nil
		},
		// A logger handed over by an upgrade: claimed before the reaper runs.
		Claim: func(pid int) <-chan int {
			exitc := c.rt.Reaper.Adopt(pid)
			status := make(chan int, 1)
			go func() { status <- (<-exitc).Status }()
			return status
		},
	}
}

// withConsole runs a runtime launch; for a terminal process it first opens a
// console socket for the runtime and afterwards hands the pty master it sent
// to the process's stdio.
func (c *Container) withConsole(pipes *shimio.Pipes, launch func(consoleSocket string) error) error {
	if !pipes.Terminal() {
		return launch("")
	}
	sock, err := shimio.NewConsoleSocket(c.socketDir)
	if err != nil {
		return err
	}
	defer sock.Close()
	if err := launch(sock.Path()); err != nil {
		return err
	}
	master, err := sock.ReceiveMaster()
	if err != nil {
		return err
	}
	return pipes.AttachConsole(master)
}

// destroyRuntimeState force-deletes the runtime's record of a container that
// failed to come up, with its own deadline: the request's may be spent.
func (c *Container) destroyRuntimeState() {
	ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
	defer cancel()
	_ = c.rt.Delete(ctx, c.ID, true)
}

// Init returns the container's init process.
func (c *Container) Init() *Process { return c.init }

// Process returns the init for execID "" or the exec with that id.
func (c *Container) Process(execID string) (*Process, error) {
	if execID == "" {
		return c.init, nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	p, ok := c.execs[execID]
	if !ok {
		return nil, fmt.Errorf("exec %q in container %q: %w", execID, c.ID, errdefs.ErrNotFound)
	}
	return p, nil
}

// initExited reports the init's exit (the reaper runs it when the exit
// arrives) after every exec exit of the container has been reported.
func (c *Container) initExited(e reaper.Exit) {
	c.mu.Lock()
	c.initReaped = true
	c.mu.Unlock()

	if !c.ownPIDNS {
		// Without a PID namespace of its own, the container's other processes
		// do not die with its init: kill them so none is leaked.
		ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
		_ = c.rt.Kill(ctx, c.ID, 9, true)
		cancel()
	}
	c.waitExecsIdle(execsBeforeInitTimeout)
	c.reportOOMBeforeExit()
	c.init.recordExit(e)
}

func (c *Container) waitExecsIdle(timeout time.Duration) {
	c.mu.Lock()
	condwait.Until(c.execsIdle, timeout, func() bool { return c.runningExecs == 0 })
	c.mu.Unlock()
}

// Exec registers (does not start) an additional process.
func (c *Container) Exec(execID string, spec []byte, stdio shimio.Config) (*Process, error) {
	if err := c.init.checkOp(OpExec); err != nil {
		return nil, err
	}
	normalized, err := execProcessSpec(spec, stdio.Terminal)
	if err != nil {
		return nil, fmt.Errorf("exec %q: %w", execID, err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.execs[execID]; ok {
		return nil, fmt.Errorf("exec %q in container %q: %w", execID, c.ID, errdefs.ErrAlreadyExists)
	}
	p := newProcess(c, execID, stdio, nil)
	p.execSpec = normalized
	c.execs[execID] = p
	return p, nil
}

// removeExec forgets a deleted exec.
func (c *Container) removeExec(execID string) {
	c.mu.Lock()
	delete(c.execs, execID)
	c.mu.Unlock()
}

// Execs returns the container's execs, sorted by id.
func (c *Container) Execs() []*Process {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]*Process, 0, len(c.execs))
	for _, p := range c.execs {
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// Pids lists the host PIDs of every process in the container.
func (c *Container) Pids(ctx context.Context) ([]int, error) {
	st := c.init.State()
	if st.Status == Deleted {
		return nil, fmt.Errorf("container %q: %w", c.ID, errdefs.ErrNotFound)
	}
	if st.Status == Stopped {
		// Nothing runs, but the task is not gone: its exit waits to be
		// collected. containerd 2.x, reconnecting after a restart, takes an
		// empty answer for a leaked shim and deletes the task, losing that
		// exit for Wait; the init's PID says the task still exists.
		return []int{st.Pid}, nil
	}
	pids, err := c.rt.Ps(ctx, c.ID)
	if err != nil {
		return nil, fmt.Errorf("list processes of %s: %w", c.ID, err)
	}
	return pids, nil
}

// Pause freezes the container.
func (c *Container) Pause(ctx context.Context, onPaused func()) error {
	return c.init.transition(OpPause, Paused, func() error { return c.rt.Pause(ctx, c.ID) }, onPaused)
}

// Resume thaws the container.
func (c *Container) Resume(ctx context.Context, onResumed func()) error {
	return c.init.transition(OpResume, Running, func() error {
		err := c.rt.Resume(ctx, c.ID)
		if err != nil && exitedChild(c.init.pid) { // p.mu is held: read the field
			// Killed while paused (docker kill, rm -f): the runtime finds it
			// "not paused" before the exit has been processed.
			return fmt.Errorf("cannot resume %s: its init has exited: %w", c.ID, errdefs.ErrFailedPrecondition)
		}
		return err
	}, onResumed)
}

// exitedChild reports whether pid, a child of the shim, has exited: it is a
// zombie, or already reaped. (A child's PID cannot be reused before the shim
// reaps it.)
func exitedChild(pid int) bool {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	i := bytes.LastIndexByte(data, ')')
	return i > 0 && i+2 < len(data) && data[i+2] == 'Z'
}

// Update applies new resource limits (OCI LinuxResources as JSON).
func (c *Container) Update(ctx context.Context, resources []byte) error {
	if err := c.init.checkOp(OpUpdate); err != nil {
		return err
	}
	var res specs.LinuxResources
	if err := json.Unmarshal(resources, &res); err != nil {
		return fmt.Errorf("update %s: resources are not valid LinuxResources JSON: %v: %w", c.ID, err, errdefs.ErrInvalidArgument)
	}
	return c.rt.Update(ctx, c.ID, resources)
}
