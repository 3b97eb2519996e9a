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
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/example/containerd-shim-example-v2/bundle"
	"github.com/example/containerd-shim-example-v2/internal/condwait"

	"github.com/containerd/errdefs"

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
// Locking: mu guards execs, runningExecs, initReaped, the OOM counts and
// reclaim; execsIdle is signalled
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
	reclaim      reclaim           // the runtime's container deleted at the init's exit (reclaim.go)
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
	// Not in this exit callback: the runtime's delete waits for its own exit,
	// which the reaper does not collect while an upgrade pauses it until the
	// callbacks are done.
	go c.reclaimAfterExit()
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
