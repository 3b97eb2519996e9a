package direct

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	taskv3 "github.com/containerd/containerd/api/runtime/task/v3"
	"google.golang.org/protobuf/types/known/anypb"
)

// Named limits of the scenarios.
const (
	// WaitTimeout bounds a wait for an exit, an event or end-of-output that
	// is due within milliseconds; generous because two cores run every test
	// of the package at once.
	WaitTimeout = 20 * time.Second
	// cgroupRemoveTimeout bounds the retries of removing a cgroup whose last
	// process is still being reaped (rmdir fails with EBUSY meanwhile).
	cgroupRemoveTimeout = 5 * time.Second
	// defaultRuncRoot is the shim's runc state root when the runtime options
	// name none; the namespace is appended (README "Runtime options").
	defaultRuncRoot = "/run/containerd/runc"
)

// Env is one test's share of the host: the parent cgroup of its
// containers, removed when the test ends.
type Env struct {
	t            testing.TB
	CgroupParent string
}

// NewEnv prepares the tools (once per run) and the test's cgroup parent. It
// skips the test when not run as root.
func NewEnv(t testing.TB) *Env {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("runs real containers: needs root")
	}
	if err := setup(); err != nil {
		t.Fatalf("setup: %v", err)
	}
	e := &Env{t: t, CgroupParent: "/exd-" + RandID(10)}
	t.Cleanup(func() {
		if err := removeCgroupEventually(e.CgroupParent); err != nil {
			t.Errorf("cgroup parent %s: %v", e.CgroupParent, err)
		}
	})
	return e
}

// RandID returns n random lowercase hex characters.
func RandID(n int) string {
	b := make([]byte, (n+1)/2)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)[:n]
}

// Config describes one container of a test.
type Config struct {
	Mode        Mode
	Name        string // prefix of the container id (the rest is random)
	Args        []string
	Stdio       StdioConfig
	NullIO      bool  // no stdio at all
	MemoryLimit int64 // bytes
	Options     *anypb.Any
	RuncRoot    string // the runc root the Options name, if any
	// PrivateSocketDir (Bootstrap only) asks, through the bootstrap's
	// socket_dir, for the socket in a directory of the test's own.
	PrivateSocketDir bool
	// HangupIgnored starts the shim with SIGHUP ignored, as a manager run
	// under nohup (or one that ignores it itself) does.
	HangupIgnored bool
	// Annotations go into the spec (a group annotation, say).
	Annotations map[string]string
}

// Container is one task, in a namespace of its own, served by a shim of its
// own, with its own bundle, cgroup and fake containerd.
type Container struct {
	ID, Namespace string
	Mode          Mode
	Bundle        *Bundle
	Containerd    *Containerd
	Shim          *Shim
	IO            *Stdio // nil for null IO
	Pid           uint32 // the init's host PID, from Create
	RuncRoot      string // runc's --root for this container
	CgroupPath    string
	Options       *anypb.Any
	SocketDir     string // the socket_dir the bootstrap named, if any
}

// Launch prepares a container's bundle, stdio and fake containerd and starts
// its shim; it does not create the task. Everything is undone by t.Cleanup,
// even when the test fails half-way.
func (e *Env) Launch(t testing.TB, cfg Config) *Container {
	t.Helper()
	name := cfg.Name
	if name == "" {
		name = "c"
	}
	c := &Container{
		ID:        name + "-" + RandID(6),
		Namespace: "exd-" + RandID(8),
		Mode:      cfg.Mode,
		Options:   cfg.Options,
	}
	c.CgroupPath = e.CgroupParent + "/" + c.ID
	root := cfg.RuncRoot
	if root == "" {
		root = defaultRuncRoot
	}
	c.RuncRoot = filepath.Join(root, c.Namespace)
	c.Containerd = NewContainerd(t)
	if cfg.PrivateSocketDir {
		// Short, as 2.3 wants it (at most 42 characters).
		c.SocketDir = filepath.Join(c.Containerd.Dir, "s")
	}
	spec := NewSpec(SpecConfig{Args: cfg.Args, CgroupsPath: c.CgroupPath, MemoryLimit: cfg.MemoryLimit, Annotations: cfg.Annotations})
	c.Bundle = NewBundle(t, t.TempDir(), spec)
	err := recordTask(c.Containerd.Dir, taskRecord{
		Namespace: c.Namespace, ID: c.ID, Bundle: c.Bundle.Dir, RuncRoot: c.RuncRoot, CgroupPath: c.CgroupPath,
	})
	if err != nil {
		t.Fatal(err)
	}
	if !cfg.NullIO {
		c.IO = NewStdio(t, cfg.Stdio)
	}
	c.Shim = StartShim(t, Launch{
		Mode: cfg.Mode, Namespace: c.Namespace, ID: c.ID, Bundle: c.Bundle.Dir,
		Containerd: c.Containerd, Options: cfg.Options, SocketDir: c.SocketDir,
		HangupIgnored: cfg.HangupIgnored,
	})
	// Registered after the shim's own cleanup, so it runs before it.
	t.Cleanup(func() { c.cleanup(t, root == defaultRuncRoot) })
	return c
}

// Run launches the container and creates its task.
func (e *Env) Run(t testing.TB, cfg Config) *Container {
	t.Helper()
	c := e.Launch(t, cfg)
	ctx := TestContext(t, WaitTimeout)
	if err := c.Create(ctx); err != nil {
		t.Fatalf("Create %s: %v", c.ID, err)
	}
	return c
}

// Task is the container's task API client.
func (c *Container) Task() TaskAPI { return c.Shim.Task }

// CreateRequest is the Create a manager sends for this container.
func (c *Container) CreateRequest() *taskv3.CreateTaskRequest {
	r := &taskv3.CreateTaskRequest{ID: c.ID, Bundle: c.Bundle.Dir, Options: c.Options}
	if c.IO != nil {
		r.Stdin, r.Stdout, r.Stderr = c.IO.Stdin, c.IO.Stdout, c.IO.Stderr
	}
	return r
}

// Create creates the task and records its PID.
func (c *Container) Create(ctx context.Context) error {
	resp, err := c.Task().Create(ctx, c.CreateRequest())
	if err != nil {
		return err
	}
	c.Pid = resp.GetPid()
	return nil
}

// ExecRequest is the Exec of args as execID, with io's FIFOs (nil: null IO).
func (c *Container) ExecRequest(t testing.TB, execID string, args []string, io *Stdio) *taskv3.ExecProcessRequest {
	t.Helper()
	spec, err := json.Marshal(NewProcess(args))
	if err != nil {
		t.Fatal(err)
	}
	r := &taskv3.ExecProcessRequest{
		ID:     c.ID,
		ExecID: execID,
		Spec:   &anypb.Any{TypeUrl: "types.containerd.io/opencontainers/runtime-spec/1/Process", Value: spec},
	}
	if io != nil {
		r.Stdin, r.Stdout, r.Stderr = io.Stdin, io.Stdout, io.Stderr
	}
	return r
}

// cleanup removes what the container may have left: the shim first (so
// nothing races with the rest), then runc's container, mounts under the
// bundle, its cgroup and, for the default root, the namespace's runc dir.
func (c *Container) cleanup(t testing.TB, defaultRoot bool) {
	if err := c.Shim.Kill(); err != nil {
		t.Error(err)
	}
	if err := runcDelete(c.RuncRoot, c.ID); err != nil {
		t.Error(err)
	}
	if err := unmountUnder(c.Bundle.Dir); err != nil {
		t.Error(err)
	}
	if err := removeCgroupEventually(c.CgroupPath); err != nil {
		t.Errorf("cgroup of %s: %v", c.ID, err)
	}
	if defaultRoot {
		if err := os.Remove(c.RuncRoot); err != nil && !errors.Is(err, os.ErrNotExist) {
			t.Errorf("runc root of namespace %s: %v", c.Namespace, err)
		}
	}
}

// removeCgroupEventually retries removeCgroup while the kernel finishes
// tearing down the cgroup's last processes.
func removeCgroupEventually(path string) error {
	deadline := time.Now().Add(cgroupRemoveTimeout)
	for {
		err := removeCgroup(path)
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestContext returns a context that ends after timeout or with the test.
func TestContext(t testing.TB, timeout time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	t.Cleanup(cancel)
	return ctx
}
