package process

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/example/containerd-shim-example-v2/bundle"
	"github.com/example/containerd-shim-example-v2/cgroup"
	"github.com/example/containerd-shim-example-v2/cgroupdriver"
	shimio "github.com/example/containerd-shim-example-v2/io"
	"github.com/example/containerd-shim-example-v2/oci"
	"github.com/example/containerd-shim-example-v2/oomlog"
	"github.com/example/containerd-shim-example-v2/reaper"
)

// Creating a container: the rootfs, its stdio, and the runtime's create (or
// a restore, deferred to Start), with nothing left behind on error.

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
	// OOMLog is the kernel's log of OOM victims, read for a container whose
	// cgroup systemd manages (nil: not read; oomremoved.go).
	OOMLog *oomlog.Log
	// Checkpoint, when set, is a CRIU image to restore the container from at
	// Start instead of creating it afresh.
	Checkpoint   string
	CriuWorkPath string
	// Output stall policy of the container's processes (see shimio.Env):
	// the timeout (0: the default, negative: never), and what is known of
	// containerd, which reads CRI's FIFOs (see shimio.Env.ReaderOwner).
	StallTimeout time.Duration
	ReaderOwner  func() (down bool, upSince time.Time)
}

// Create mounts the rootfs, opens stdio and has the runtime create the
// container. onCreated runs with the init's PID before any exit of it can be
// reported. On error nothing is left behind.
func Create(ctx context.Context, r *reaper.Reaper, cfg CreateConfig, onCreated func(pid int)) (_ *Container, retErr error) {
	spec, err := readSpec(cfg.Bundle)
	if err != nil {
		return nil, err
	}
	if cfg.Checkpoint == "" && spec.Process.Terminal != cfg.Stdio.Terminal {
		// The runtime refuses either way round (a console socket without a
		// terminal, a terminal without one), as an Unknown error.
		return nil, fmt.Errorf("the request's terminal=%t and config.json's process.terminal=%t differ: %w",
			cfg.Stdio.Terminal, spec.Process.Terminal, errdefs.ErrInvalidArgument)
	}
	c := &Container{
		ID:         cfg.ID,
		Bundle:     cfg.Bundle,
		Namespace:  cfg.Namespace,
		rt:         cfg.Runtime,
		events:     cfg.Events,
		oomWatcher: cfg.OOM,
		socketDir:  cfg.SocketDir,
		stall:      stallConfig{timeout: cfg.StallTimeout, readerOwner: cfg.ReaderOwner},
		ownPIDNS:   hasOwnNamespace(spec, specs.PIDNamespace),
		ownMountNS: hasOwnNamespace(spec, specs.MountNamespace),
		execs:      make(map[string]*Process),
	}
	c.execsIdle = sync.NewCond(&c.mu)
	// An init exit recorded in a bundle that is used again (containerd makes
	// a new one for each task; other callers may not) is not this init's:
	// `delete` would report it if the daemon died before this one exits.
	if err := os.Remove(filepath.Join(cfg.Bundle, bundle.ExitFile)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("remove the previous init's exit record: %w", err)
	}
	c.rt.Reaper = r
	if err := c.claimRuntimeID(ctx); err != nil {
		return nil, err
	}
	if !c.rt.SystemdCgroup && cgroupdriver.WantsSystemd(cgroupsPath(spec)) {
		// Saved with the rest below: every later runtime call, and a
		// successor after an upgrade, runs the runtime the same way.
		c.rt.SystemdCgroup = true
		slog.Info("the spec's cgroups path is systemd's: the runtime runs with its systemd cgroup driver",
			"container", c.ID, "cgroupsPath", cgroupsPath(spec))
	}
	c.markOOMLog(cfg.OOMLog)
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
		if err := mountRootfs(rootfs, cfg.Rootfs, r); err != nil {
			return nil, classifyMountError(err)
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
		work := cfg.CriuWorkPath
		if work == "" {
			work = filepath.Join(cfg.Bundle, criuWorkDir)
		}
		p.restore = &oci.RestoreOpts{
			CheckpointOpts: oci.CheckpointOpts{ImagePath: cfg.Checkpoint, WorkPath: work},
			PidFile:        filepath.Join(cfg.Bundle, bundle.InitPidFile),
			NoPivot:        cfg.NoPivot,
		}
		p.mu.Lock()
		onCreated(0)
		p.mu.Unlock()
		return c, nil
	}

	pidFile := filepath.Join(cfg.Bundle, bundle.InitPidFile)
	// The runtime is not killed at the request's deadline: killed after it
	// made the container's cgroups but before it recorded the container,
	// it leaves cgroups that no runtime delete finds. It runs on for a
	// grace period; a container it created after the request ended is
	// removed below (launch kills its init, destroyRuntimeState the rest).
	runCtx, endRun := afterGrace(ctx, launchGrace)
	defer endRun()
	pid, exitc, err := c.launch(pipes, pidFile, func(stdio oci.Stdio, consoleSocket string) error {
		err := c.rt.Create(runCtx, c.ID, cfg.Bundle, oci.CreateOpts{
			PidFile:       pidFile,
			ConsoleSocket: consoleSocket,
			NoPivot:       cfg.NoPivot,
			NoNewKeyring:  cfg.NoNewKey,
			Stdio:         stdio,
		})
		if err == nil && ctx.Err() != nil {
			return fmt.Errorf("the runtime created container %q after its request ended: %w", c.ID, context.Cause(ctx))
		}
		return err
	})
	if err != nil {
		pipes.Close()
		c.destroyRuntimeState()
		return nil, fmt.Errorf("create container %s: %w", c.ID, err)
	}
	p.pid = pid
	c.watchCgroup(p.pid)
	p.session = c.noteSession(pid)
	c.holdMountNS(pid)

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
// channel. On success the shim's copies of the runtime's stdio are released
// and the output relays, held until then, start; on failure the caller closes
// pipes, which drops what the runtime wrote there. A process the runtime
// started for a launch that failed after it (the runtime killed at the
// request's deadline, its pty master not had) is killed: the launch is
// reported failed, so nothing would track it. The runtime writes the PID file
// once the process runs, so the file is read whether or not it succeeded, and
// one an earlier launch left is removed first.
func (c *Container) launch(pipes *shimio.Pipes, pidFile string, run func(stdio oci.Stdio, consoleSocket string) error) (int, <-chan reaper.Exit, error) {
	in, out, errf := pipes.RuntimeFiles()
	if err := os.Remove(pidFile); err != nil && !errors.Is(err, os.ErrNotExist) {
		return 0, nil, fmt.Errorf("remove stale pid file: %w", err)
	}
	w := c.rt.Reaper.Open()
	defer w.Close()
	err := c.withConsole(pipes, func(consoleSocket string) error {
		return run(oci.Stdio{In: in, Out: out, Err: errf}, consoleSocket)
	})
	pid, perr := oci.ReadPidFile(pidFile)
	if err == nil {
		err = perr
	}
	if err != nil {
		if pid > 0 {
			c.killLaunched(w, pid)
		}
		// runc writes the PID file through a temporary ".<name>" beside it,
		// which a runtime killed in between leaves in the bundle.
		_ = os.Remove(filepath.Join(filepath.Dir(pidFile), "."+filepath.Base(pidFile)))
		return 0, nil, err
	}
	exitc := w.Claim(pid)
	pipes.ReleaseRuntimeFiles()
	pipes.Launched() // what the pipes hold from now on is the process's
	return pid, exitc, nil
}

// killLaunched kills a process the runtime launched for a launch that then
// failed. Once the runtime has returned, the process is the shim's child
// (the shim is the subreaper). It is claimed from the launch's window, and
// signalled through a pidfd opened only while its exit has not come
// (reaper.Pidfd): one that exited already, whose PID may be another
// process's by now, is left alone, as is every process where pidfds are
// missing (before Linux 5.3: a bare PID is not trusted). Its exit goes to the
// claim, unread. (An exec whose PID file could not be read is beyond this:
// its PID is not known. A container's init is also removed with the
// runtime's record by the caller.)
func (c *Container) killLaunched(w *reaper.Window, pid int) {
	fd, _, err := c.rt.Reaper.Pidfd(pid, w.Claim(pid))
	if fd < 0 {
		if err != nil && !errors.Is(err, unix.ESRCH) {
			slog.Warn("kill a process whose launch failed: no pidfd", "pid", pid, "error", err)
		}
		return
	}
	defer unix.Close(fd)
	if err := unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0); err != nil && !errors.Is(err, unix.ESRCH) {
		slog.Warn("kill a process whose launch failed", "pid", pid, "error", err)
	}
}

// ioEnv is what stdio needs to know of one of the container's processes.
func (c *Container) ioEnv(processID string) shimio.Env {
	return shimio.Env{
		ProcessID:    processID,
		Namespace:    c.Namespace,
		StallTimeout: c.stall.timeout,
		ReaderOwner:  c.stall.readerOwner,
		// The runtime writes its errors to the process's stderr: a failed
		// launch's must not reach the container's log (launch releases).
		HoldOutput: true,
		// The logger's exit as a reaper exit callback (see shimio.Env): no
		// goroutine waits for it meanwhile.
		Spawn: func(cmd *exec.Cmd, exited func(int)) error {
			exitc, err := c.rt.Reaper.Start(cmd)
			if err != nil {
				return err
			}
			c.rt.Reaper.Then(cmd.Process.Pid, exitc, func(e reaper.Exit) { exited(e.Status) })
			return nil
		},
		// A logger handed over by an upgrade: claimed before the reaper runs.
		Claim: func(pid int, exited func(int)) {
			c.rt.Reaper.Then(pid, c.rt.Reaper.Adopt(pid), func(e reaper.Exit) { exited(e.Status) })
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

// claimRuntimeID makes sure the runtime keeps no container c.ID yet. Daemons
// of one namespace share the runtime's root, so one may be another daemon's
// (a caller that drives daemons directly, two containerd daemons using one
// namespace name): it is refused as AlreadyExists and left alone, where the
// runtime's own refusal would have ended in the failure path's force delete
// of it. One created from this very bundle is a leftover of this task (a
// daemon of it died before its cleanup ran) and is removed, as that cleanup
// would have.
func (c *Container) claimRuntimeID(ctx context.Context) error {
	if !c.rt.HasState(c.ID) {
		return nil
	}
	if same, ok := c.rt.IsBundleOf(ctx, c.ID, c.Bundle); ok && same {
		slog.Info("the runtime keeps a container of this task's bundle from before: removed", "container", c.ID)
		c.destroyRuntimeState()
		return nil
	}
	return fmt.Errorf("the runtime already has a container %q under %s, not created from bundle %s: %w",
		c.ID, c.rt.Root, c.Bundle, errdefs.ErrAlreadyExists)
}

// destroyRuntimeState force-deletes the runtime's record of a container that
// failed to come up, with its own deadline: the request's may be spent; and
// the cgroups a runtime killed during its work left (RemoveCgroupsLeft).
func (c *Container) destroyRuntimeState() {
	ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
	defer cancel()
	_ = c.rt.Delete(ctx, c.ID, true)
	if err := RemoveCgroupsLeft(c.Bundle, c.rt.SystemdCgroup); err != nil {
		slog.Warn("cgroups of a container that failed to come up left", "container", c.ID, "error", err)
	}
}
