package direct

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	taskv3 "github.com/containerd/containerd/api/runtime/task/v3"
	"golang.org/x/sys/unix"
)

// smallTmpfs mounts a tmpfs of size bytes on a directory of the test's own,
// unmounted when the test ends (after whatever is registered later).
func smallTmpfs(t *testing.T, size string) string {
	t.Helper()
	dir := t.TempDir()
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size="+size+",mode=0700"); err != nil {
		t.Fatalf("mount tmpfs on %s: %v", dir, err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil && err != unix.EINVAL {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
	return dir
}

// fill writes into dir until the filesystem is full, and returns a func
// that frees the space again.
func fill(t *testing.T, dir string) func() {
	t.Helper()
	p := filepath.Join(dir, "filler")
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64<<10)
	for {
		if _, err := f.Write(buf); err != nil {
			if !errors.Is(err, unix.ENOSPC) {
				t.Fatalf("fill %s: %v", dir, err)
			}
			break
		}
	}
	// Small files for the last blocks, and inodes.
	for i := 0; ; i++ {
		g, err := os.Create(filepath.Join(dir, fmt.Sprintf("fx%d", i)))
		if err != nil {
			break
		}
		_, err = g.Write([]byte("x"))
		g.Close()
		if err != nil {
			break
		}
		if i > 100000 {
			break
		}
	}
	f.Close()
	return func() {
		ents, _ := os.ReadDir(dir)
		for _, e := range ents {
			if e.Name() == "filler" || strings.HasPrefix(e.Name(), "fx") {
				os.Remove(filepath.Join(dir, e.Name()))
			}
		}
	}
}

// A full bundle filesystem fails a Create, and an exec's Start, with
// ResourceExhausted (as the shim already answers for EMFILE: a caller can
// tell it from a fault of its request and retry once there is room), and
// leaves nothing of the exec's process spec in the bundle. The stock shim
// answers Unknown.
func TestFullBundleIsResourceExhausted(t *testing.T) {
	host := func(t *testing.T) (*Env, *Container, context.Context) {
		env := NewEnv(t)
		a := env.Run(t, Config{Mode: Bootstrap, Name: "host", Args: loopArgs, NullIO: true})
		ctx := TestContext(t, 2*time.Minute)
		start(t, ctx, a, "")
		return env, a, ctx
	}
	t.Run("create", func(t *testing.T) {
		env, a, ctx := host(t)
		dir := smallTmpfs(t, "1m")
		b := lateTask(t, env, a, "full", dir, []string{"true"})
		free := fill(t, dir)
		_, err := b.Task().Create(ctx, b.CreateRequest())
		free()
		expectClass(t, "Create with the bundle's filesystem full", err, "ResourceExhausted")
		stop(t, ctx, a)
	})
	t.Run("exec", func(t *testing.T) {
		env, a, ctx := host(t)
		dir := smallTmpfs(t, "1m")
		b := lateTask(t, env, a, "later", dir, loopArgs)
		if _, err := b.Task().Create(ctx, b.CreateRequest()); err != nil {
			t.Fatal(err)
		}
		start(t, ctx, b, "")
		free := fill(t, dir)
		addExec(t, ctx, b, "x", []string{"true"}, nil)
		_, err := b.Task().Start(ctx, &taskv3.StartRequest{ID: b.ID, ExecID: "x"})
		expectClass(t, "Start of an exec with the bundle's filesystem full", err, "ResourceExhausted")
		deleteTask(t, ctx, b, "x")
		if _, err := os.Lstat(filepath.Join(dir, ".x.process.json")); err == nil {
			t.Errorf("the failed exec's process spec file is left in the bundle after its Delete")
		}
		free()
		stop(t, ctx, b)
		stop(t, ctx, a)
	})
}

// A runtime the shim cannot fork (its pids cgroup full: EAGAIN) fails the
// request with ResourceExhausted, not Unknown. The stock shim: Unknown.
func TestForkFailureIsResourceExhausted(t *testing.T) {
	env := NewEnv(t)
	a := env.Run(t, Config{Mode: Bootstrap, Name: "host", Args: loopArgs, NullIO: true})
	ctx := TestContext(t, 2*time.Minute)
	start(t, ctx, a, "")
	cg := pidsCgroup(t, a.Shim.Pid)
	b := lateTask(t, env, a, "starved", t.TempDir(), []string{"true"})
	pidsSet(t, cg, readTrim(filepath.Join(cg, "pids.current")))
	_, err := b.Task().Create(ctx, b.CreateRequest())
	pidsSet(t, cg, "max")
	expectClass(t, "Create with the shim's pids cgroup full", err, "ResourceExhausted")
	if !a.Shim.Exited(100 * time.Millisecond) {
		stop(t, ctx, a)
	}
}
