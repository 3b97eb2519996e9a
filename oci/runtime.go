// Package oci drives an OCI runtime binary (runc, crun, or any runc-compatible
// command line) for one container.
//
// Every invocation is a child of the shim, started and reaped through the
// shim's reaper; errors carry the runtime's own message, read from the JSON
// log it appends to (--log <bundle>/log.json --log-format json).
package oci

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"

	"github.com/example/containerd-shim-example-v2/internal/rawfile"
	"github.com/example/containerd-shim-example-v2/reaper"
)

// DefaultBinary is used when the runtime options name no binary.
const DefaultBinary = "runc"

// DefaultRoot is where runc keeps container state when no root is configured;
// the namespace is appended so that equal ids in two namespaces do not collide.
const DefaultRoot = "/run/containerd/runc"

// Runtime is the command line of one container's OCI runtime.
type Runtime struct {
	Binary        string // executable name or path
	Root          string // --root: runtime state directory
	LogPath       string // --log: JSON log, read back for error messages
	SystemdCgroup bool   // --systemd-cgroup
	Criu          string // the CRIU binary of checkpoints and restores ("": criu in PATH); see withCRIU
	Dir           string // working directory of the runtime process (the bundle)
	Reaper        *reaper.Reaper

	pathFirst string // a directory put first in the runtime's PATH (withCRIU)
}

// Stdio are the files the runtime hands to the process it creates. Nil entries
// become /dev/null.
type Stdio struct {
	In, Out, Err *os.File
}

// Error is a failed runtime invocation.
type Error struct {
	Op      string // create, start, kill, ...
	Status  int    // the runtime's exit status
	Message string // the runtime's last error log line, or its stderr
}

func (e *Error) Error() string {
	if e.Message == "" {
		return fmt.Sprintf("OCI runtime %s failed: exit status %d", e.Op, e.Status)
	}
	return fmt.Sprintf("OCI runtime %s failed: %s", e.Op, e.Message)
}

// Is makes the failure of a runtime that has no such command at all
// errdefs.ErrNotImplemented rather than Unknown: crun built without CRIU has
// no checkpoint or restore, and a runc-compatible binary may lack a newer
// command. The caller learns that the runtime lacks the feature, not that the
// container is in trouble.
func (e *Error) Is(target error) bool {
	return target == errdefs.ErrNotImplemented && e.unknownCommand()
}

// unknownCommand recognises the runtimes' words for a command they do not
// have: crun's "unknown command <op>", and runc's command-line library's
// "No help topic for '<op>'".
func (e *Error) unknownCommand() bool {
	return strings.Contains(e.Message, "unknown command "+e.Op) ||
		strings.Contains(e.Message, "No help topic for '"+e.Op+"'")
}

func (r *Runtime) args(logPath string, op ...string) []string {
	a := make([]string, 0, 8+len(op))
	if r.Root != "" {
		a = append(a, "--root", r.Root)
	}
	if logPath != "" {
		a = append(a, "--log", logPath, "--log-format", "json")
	}
	if r.SystemdCgroup {
		a = append(a, "--systemd-cgroup")
	}
	return append(a, op...)
}

// run executes one runtime command and waits for it. With stdio set, those
// files become the command's stdio (create/exec hand them on to the container);
// otherwise stdout is captured and returned.
func (r *Runtime) run(ctx context.Context, stdio *Stdio, stdin []byte, op ...string) ([]byte, error) {
	log := r.newCallLog()
	cmd := exec.Command(r.BinaryOrDefault(), r.args(log.path, op...)...)
	cmd.Dir = r.Dir
	cmd.Env = runtimeEnv(r.pathFirst)
	// If the shim dies mid-command, the runtime command must not outlive it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}

	var outR, errR, inW *os.File
	var closeAfterStart []*os.File
	// A command that starts no container process runs in a process group
	// of its own, which is killed whole when the command is: a runtime that
	// does its work in a child (a wrapper script around runc, CRIU under a
	// checkpoint) would otherwise leave that child running, under the shim
	// (a subreaper) and holding the output pipes below. Create, exec and
	// restore keep the shim's group: the container's process they start
	// may stay in the runtime's group, and launch deals with it.
	group := stdio == nil
	cmd.SysProcAttr.Setpgid = group
	if stdio != nil {
		cmd.Stdin, cmd.Stdout, cmd.Stderr = orNull(stdio.In), orNull(stdio.Out), orNull(stdio.Err)
	} else {
		cmd.Stdin = orNull(nil) // replaced by a pipe below when there is input
		var outW, errW, inR *os.File
		var err error
		if outR, outW, err = os.Pipe(); err != nil {
			return nil, fmt.Errorf("runtime %s: stdout pipe: %w", op[0], err)
		}
		defer outR.Close()
		if errR, errW, err = os.Pipe(); err != nil {
			outW.Close()
			return nil, fmt.Errorf("runtime %s: stderr pipe: %w", op[0], err)
		}
		defer errR.Close()
		cmd.Stdout, cmd.Stderr = outW, errW
		closeAfterStart = append(closeAfterStart, outW, errW)
		if stdin != nil {
			if inR, inW, err = os.Pipe(); err != nil {
				outW.Close()
				errW.Close()
				return nil, fmt.Errorf("runtime %s: stdin pipe: %w", op[0], err)
			}
			defer inW.Close()
			cmd.Stdin = inR
			closeAfterStart = append(closeAfterStart, inR)
		}
	}

	exitc, err := r.Reaper.Start(cmd)
	for _, f := range closeAfterStart {
		f.Close()
	}
	if err != nil {
		return nil, fmt.Errorf("runtime %s: %w", op[0], err)
	}

	// Collect output concurrently with waiting: a command can fill a pipe.
	var stdout, stderr bytes.Buffer
	done := make(chan struct{}, 2)
	if outR != nil {
		go func() { _, _ = io.Copy(&stdout, outR); done <- struct{}{} }()
		go func() {
			_, _ = io.Copy(&stderr, io.LimitReader(errR, 64<<10))
			_, _ = io.Copy(io.Discard, errR)
			done <- struct{}{}
		}()
	}
	if inW != nil {
		go func() { _, _ = inW.Write(stdin); inW.Close() }()
	}

	var exit reaper.Exit
	select {
	case exit = <-exitc:
	case <-ctx.Done():
		if group {
			killGroup(cmd.Process.Pid)
		}
		_ = cmd.Process.Kill()
		exit = <-exitc
	}
	// The reaper has reaped it: the pidfd os/exec keeps in cmd.Process (for
	// Kill) would otherwise stay open until a garbage collection finds it.
	pid := cmd.Process.Pid
	_ = cmd.Process.Release()
	if outR != nil {
		awaitOutput(done, pid, outR, errR)
	}
	logged := log.finish()
	if exit.Status != 0 {
		msg := logged
		if msg == "" {
			msg = string(bytes.TrimSpace(stderr.Bytes()))
		}
		if ctx.Err() != nil && msg == "" {
			msg = ctx.Err().Error()
		}
		return nil, &Error{Op: op[0], Status: exit.Status, Message: msg}
	}
	return stdout.Bytes(), nil
}

// leftOutputWait bounds the wait for the end of a finished command's output:
// it ends at once unless a child the command left holds the pipes.
const leftOutputWait = time.Second

// awaitOutput waits until the copies of a command's output (done, one
// signal each) have ended. The command has exited, so its output ends at
// once, unless a child it left in its group holds the pipes' write ends
// (a wrapper's runtime, hung): past leftOutputWait that group is killed and
// the copies are ended by closing their ends (a child that left the group
// may still hold them).
func awaitOutput(done <-chan struct{}, pgid int, ends ...*os.File) {
	timer := time.NewTimer(leftOutputWait)
	defer timer.Stop()
	for n := 0; n < 2; n++ {
		select {
		case <-done:
		case <-timer.C:
			killGroup(pgid)
			for _, f := range ends {
				f.Close()
			}
			<-done
		}
	}
}

// killGroup kills the process group of a runtime command that runs in one
// of its own (its leader's pid). A group's number is not given to another
// process while any member lives, so a group whose leader has been reaped
// is still this command's, or gone.
func killGroup(pgid int) { _ = unix.Kill(-pgid, unix.SIGKILL) }

// devNull is /dev/null, opened once for the life of the daemon and given to
// every runtime call for the stdio it leaves empty. Left to os/exec, each
// empty entry opens /dev/null again, and on Linux os.OpenFile first offers
// every new file to the network poller (two fcntl calls, an epoll_ctl the
// kernel refuses, two more fcntl calls): up to 21 system calls per create or
// exec, for a descriptor that is the same every time.
var devNull = sync.OnceValues(func() (*os.File, error) { return os.OpenFile(os.DevNull, os.O_RDWR, 0) })

// orNull returns f, or the shared /dev/null when f is nil. Should /dev/null
// not open, it returns nil and os/exec tries on its own.
func orNull(f *os.File) io.ReadWriter {
	if f != nil {
		return f
	}
	if null, err := devNull(); err == nil {
		return null
	}
	return nil
}

// runtimeEnv is the shim's environment without NOTIFY_SOCKET (a container
// must not signal readiness to whatever service manager started containerd),
// with pathFirst, if any, first in PATH.
func runtimeEnv(pathFirst string) []string {
	env := os.Environ()
	out := env[:0:0]
	sawPath := false
	for _, kv := range env {
		switch {
		case strings.HasPrefix(kv, "NOTIFY_SOCKET="):
			continue
		case pathFirst != "" && strings.HasPrefix(kv, "PATH="):
			kv, sawPath = "PATH="+pathFirst+":"+kv[len("PATH="):], true
		}
		out = append(out, kv)
	}
	if pathFirst != "" && !sawPath {
		out = append(out, "PATH="+pathFirst)
	}
	return out
}

// CreateOpts are the options of Create.
type CreateOpts struct {
	PidFile       string
	ConsoleSocket string
	NoPivot       bool
	NoNewKeyring  bool
	Stdio         Stdio
}

// Create creates the container (its init blocked before exec) and returns
// once the runtime has written the init's PID to opts.PidFile.
func (r *Runtime) Create(ctx context.Context, id, bundle string, opts CreateOpts) error {
	a := []string{"create", "--bundle", bundle, "--pid-file", opts.PidFile}
	if opts.ConsoleSocket != "" {
		a = append(a, "--console-socket", opts.ConsoleSocket)
	}
	if opts.NoPivot {
		a = append(a, "--no-pivot")
	}
	if opts.NoNewKeyring {
		a = append(a, "--no-new-keyring")
	}
	_, err := r.run(ctx, &opts.Stdio, nil, append(a, id)...)
	return err
}

// Start lets a created container's init exec its process.
func (r *Runtime) Start(ctx context.Context, id string) error {
	_, err := r.run(ctx, nil, nil, "start", id)
	return err
}

// ExecOpts are the options of Exec.
type ExecOpts struct {
	ProcessFile   string // OCI Process JSON, written by the caller
	PidFile       string
	ConsoleSocket string
	Stdio         Stdio
}

// Exec starts an additional process in the container, detached: it returns
// once the process runs and its PID is in opts.PidFile.
func (r *Runtime) Exec(ctx context.Context, id string, opts ExecOpts) error {
	a := []string{"exec", "--process", opts.ProcessFile, "--detach", "--pid-file", opts.PidFile}
	if opts.ConsoleSocket != "" {
		a = append(a, "--console-socket", opts.ConsoleSocket)
	}
	_, err := r.run(ctx, &opts.Stdio, nil, append(a, id)...)
	return err
}

// Kill sends sig to the container's init, or to all its processes.
func (r *Runtime) Kill(ctx context.Context, id string, sig int, all bool) error {
	a := []string{"kill"}
	if all {
		a = append(a, "--all")
	}
	_, err := r.run(ctx, nil, nil, append(a, id, strconv.Itoa(sig))...)
	return err
}

// Delete removes the container's runtime state; force kills it first.
func (r *Runtime) Delete(ctx context.Context, id string, force bool) error {
	a := []string{"delete"}
	if force {
		a = append(a, "--force")
	}
	_, err := r.run(ctx, nil, nil, append(a, id)...)
	return err
}

// Pause freezes every process of the container.
func (r *Runtime) Pause(ctx context.Context, id string) error {
	_, err := r.run(ctx, nil, nil, "pause", id)
	return err
}

// Resume thaws a paused container.
func (r *Runtime) Resume(ctx context.Context, id string) error {
	_, err := r.run(ctx, nil, nil, "resume", id)
	return err
}

// Ps lists the host PIDs of the container's processes.
func (r *Runtime) Ps(ctx context.Context, id string) ([]int, error) {
	out, err := r.run(ctx, nil, nil, "ps", "--format", "json", id)
	if err != nil {
		return nil, err
	}
	var pids []int
	if err := json.Unmarshal(out, &pids); err != nil {
		return nil, fmt.Errorf("runtime ps: decode %q: %w", out, err)
	}
	return pids, nil
}

// resourcesOnStdin names the runtime's standard input, where Update writes
// the resources, by a path every runtime opens as given. runc reads "-" from
// its standard input; crun opens "/dev/stdin" for it, a symlink that a /dev
// without an init system's additions (a bare devtmpfs) does not have, where
// every update failed ("error opening file `/dev/stdin`").
const resourcesOnStdin = "/proc/self/fd/0"

// Update applies LinuxResources (JSON) to the running container.
func (r *Runtime) Update(ctx context.Context, id string, resources []byte) error {
	_, err := r.run(ctx, nil, resources, "update", "--resources="+resourcesOnStdin, id)
	return err
}

// State returns the runtime's view of the container (`state` JSON).
func (r *Runtime) State(ctx context.Context, id string) ([]byte, error) {
	return r.run(ctx, nil, nil, "state", id)
}

// ContainerState is the part of the runtime's `state` answer the shim reads.
type ContainerState struct {
	Status string `json:"status"` // "created", "running", "paused", "stopped"
	Bundle string `json:"bundle"` // the bundle it was created from
}

// StateOf is State decoded; an answer that does not decode is an empty
// state (the runtime answered, but says nothing the shim can use).
func (r *Runtime) StateOf(ctx context.Context, id string) (ContainerState, error) {
	var st ContainerState
	out, err := r.State(ctx, id)
	if err == nil && json.Unmarshal(out, &st) != nil {
		st = ContainerState{}
	}
	return st, err
}

// HasState reports whether the runtime keeps state for id under its root
// (which must be set): runc and crun both keep a directory per container
// there, so a missing one saves running the runtime to hear it say so. A
// directory that cannot be looked at (no permission) is not reported.
func (r *Runtime) HasState(id string) bool {
	_, err := os.Stat(filepath.Join(r.Root, id))
	return err == nil
}

// IsBundleOf reports whether the runtime's container id was created from
// bundle (its state names the bundle; the same directory by identity, or
// by path when either is gone). ok is false when the runtime cannot say.
func (r *Runtime) IsBundleOf(ctx context.Context, id, bundle string) (same, ok bool) {
	st, err := r.StateOf(ctx, id)
	if err != nil || st.Bundle == "" {
		return false, false
	}
	a, errA := os.Stat(st.Bundle)
	b, errB := os.Stat(bundle)
	if errA == nil && errB == nil {
		return os.SameFile(a, b), true
	}
	return filepath.Clean(st.Bundle) == filepath.Clean(bundle), true
}

// ReadPidFile reads a PID written by the runtime.
func ReadPidFile(path string) (int, error) {
	data, _, err := rawfile.ReadInto(path, make([]byte, 32))
	if err != nil {
		return 0, fmt.Errorf("read pid file: %w", err)
	}
	pid, err := strconv.Atoi(string(bytes.TrimSpace(data)))
	if err != nil || pid <= 0 {
		return 0, fmt.Errorf("pid file %s holds %q: not a pid", filepath.Base(path), data)
	}
	return pid, nil
}

// WriteProcessFile writes an exec's OCI process spec for `exec --process`
// (owner-only: it holds the process's environment).
func WriteProcessFile(path string, spec []byte) error {
	err := rawfile.Write(path, spec, unix.O_CREAT|unix.O_TRUNC, 0o600)
	if err != nil {
		// A write cut short (a full disk) leaves part of the spec, the
		// environment included, which nobody would remove.
		_ = unix.Unlink(path)
	}
	return err
}

// BinaryOrDefault returns the runtime binary that will be run.
func (r *Runtime) BinaryOrDefault() string {
	if r.Binary == "" {
		return DefaultBinary
	}
	return r.Binary
}

// CheckpointOpts are the options of Checkpoint (runc's flags, via CRIU).
type CheckpointOpts struct {
	ImagePath       string
	WorkPath        string
	ParentPath      string
	LeaveRunning    bool
	TCPEstablished  bool
	ExtUnixSockets  bool
	ShellJob        bool
	FileLocks       bool
	EmptyNamespaces []string
	CgroupsMode     string
}

// Checkpoint dumps the container's processes into opts.ImagePath.
func (r *Runtime) Checkpoint(ctx context.Context, id string, opts CheckpointOpts) error {
	a := opts.criuFlags([]string{"checkpoint"})
	if opts.ParentPath != "" {
		a = append(a, "--parent-path", opts.ParentPath)
	}
	a = appendFlag(a, "--leave-running", opts.LeaveRunning)
	for _, ns := range opts.EmptyNamespaces {
		a = append(a, "--empty-ns", ns)
	}
	if opts.CgroupsMode != "" {
		a = append(a, "--manage-cgroups-mode", opts.CgroupsMode)
	}
	rc, err := r.withCRIU()
	if err != nil {
		return fmt.Errorf("checkpoint %s: %w", id, err)
	}
	_, err = rc.run(ctx, nil, nil, append(a, id)...)
	return err
}

// RestoreOpts are the options of Restore.
type RestoreOpts struct {
	CheckpointOpts
	PidFile       string
	ConsoleSocket string
	NoPivot       bool
	Stdio         Stdio
}

// Restore recreates the container from a checkpoint image, detached: it
// returns once the restored init runs and its PID is in opts.PidFile.
func (r *Runtime) Restore(ctx context.Context, id, bundle string, opts RestoreOpts) error {
	a := opts.criuFlags([]string{"restore", "--detach", "--bundle", bundle, "--pid-file", opts.PidFile})
	if !r.crunFamily() {
		// The shim is the subreaper; runc must not make itself one while
		// it restores (the stock shim passes this too). crun never does,
		// and its restore refuses the flag as an unknown option.
		a = append(a, "--no-subreaper")
	}
	if opts.ConsoleSocket != "" {
		a = append(a, "--console-socket", opts.ConsoleSocket)
	}
	// crun's restore has no --no-pivot (its create has): it would refuse
	// the whole command line.
	a = appendFlag(a, "--no-pivot", opts.NoPivot && !r.crunFamily())
	rc, err := r.withCRIU()
	if err != nil {
		return fmt.Errorf("restore %s: %w", id, err)
	}
	_, err = rc.run(ctx, &opts.Stdio, nil, append(a, id)...)
	var failed *Error
	if errors.As(err, &failed) && failed.Message == "" {
		// The runtime's stderr was the container's, and a runtime that has
		// no restore at all (crun built without CRIU) said so there, where
		// nobody reads it. Ask it again where the answer can be read, so
		// that the caller learns NotImplemented, and why.
		var probe *Error
		if _, perr := r.run(ctx, nil, nil, "restore", "--help"); errors.As(perr, &probe) && probe.unknownCommand() {
			failed.Message = probe.Message
		}
	}
	return err
}

// crunFamily reports whether the runtime is crun (or krun, crun built with
// libkrun), whose restore takes fewer of runc's flags. The binary's name is
// all the shim knows of it without running it; a crun under another name is
// treated as runc-compatible.
func (r *Runtime) crunFamily() bool {
	switch filepath.Base(r.Binary) {
	case "crun", "krun":
		return true
	}
	return false
}

// criuFlags appends the image, work directory and CRIU switches that
// checkpoint and restore share.
func (o CheckpointOpts) criuFlags(a []string) []string {
	a = append(a, "--image-path", o.ImagePath)
	if o.WorkPath != "" {
		a = append(a, "--work-path", o.WorkPath)
	}
	a = appendFlag(a, "--tcp-established", o.TCPEstablished)
	a = appendFlag(a, "--ext-unix-sk", o.ExtUnixSockets)
	a = appendFlag(a, "--shell-job", o.ShellJob)
	return appendFlag(a, "--file-locks", o.FileLocks)
}

func appendFlag(a []string, flag string, on bool) []string {
	if on {
		return append(a, flag)
	}
	return a
}
