package direct

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	taskv3 "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/containerd/api/types"
	tasktypes "github.com/containerd/containerd/api/types/task"
	"google.golang.org/protobuf/types/known/anypb"
)

// An exec spec that is JSON with args but is not an OCI Process (a field of
// the wrong type, a relative cwd, which the OCI spec forbids) is the
// caller's mistake: InvalidArgument at Exec, not an Unknown from the
// runtime at Start.
func TestExecSpecThatIsNotAProcess(t *testing.T) {
	env := NewEnv(t)
	c := env.Run(t, Config{Mode: Bootstrap, Name: "rvx", Args: loopArgs, NullIO: true})
	ctx := TestContext(t, time.Minute)
	api := c.Task()
	start(t, ctx, c, "")
	for _, spec := range []string{
		`{"args":["true"],"cwd":5}`,
		`{"args":["true"],"cwd":"/","env":"PATH=/bin"}`,
		`{"args":["true"],"cwd":"/","user":{"uid":-1}}`,
		`{"args":["true"],"cwd":"relative"}`,
	} {
		id := "x" + RandID(4)
		_, err := api.Exec(ctx, &taskv3.ExecProcessRequest{ID: c.ID, ExecID: id,
			Spec: &anypb.Any{TypeUrl: "types.containerd.io/opencontainers/runtime-spec/1/Process", Value: []byte(spec)}})
		if err == nil {
			_, err = api.Start(ctx, &taskv3.StartRequest{ID: c.ID, ExecID: id})
			api.Delete(ctx, &taskv3.DeleteRequest{ID: c.ID, ExecID: id})
		}
		expectClass(t, "exec spec "+spec, err, "InvalidArgument")
	}
	stop(t, ctx, c)
}

// Checkpoint and restore paths the caller got wrong: a regular file, a
// relative path (the runtime resolves it in the daemon's working
// directory, a task's bundle), a restore from a directory that is not there
// (the runtime creates it on the host, and leaves it). InvalidArgument or
// NotFound, and nothing made.
func TestCheckpointPathsTheCallerGotWrong(t *testing.T) {
	env := NewEnv(t)
	c := env.Run(t, Config{Mode: Bootstrap, Name: "rvc", Args: loopArgs, NullIO: true})
	ctx := TestContext(t, time.Minute)
	api := c.Task()
	start(t, ctx, c, "")
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := api.Checkpoint(ctx, &taskv3.CheckpointTaskRequest{ID: c.ID, Path: file})
	expectClass(t, "Checkpoint into a regular file", err, "InvalidArgument")
	_, err = api.Checkpoint(ctx, &taskv3.CheckpointTaskRequest{ID: c.ID, Path: "relative/image"})
	expectClass(t, "Checkpoint into a relative path", err, "InvalidArgument")
	if _, serr := os.Stat(filepath.Join(c.Bundle.Dir, "relative")); serr == nil {
		t.Errorf("the relative checkpoint path was made in the bundle %s", c.Bundle.Dir)
	}
	expectStatus(t, ctx, c, "", tasktypes.Status_RUNNING)

	missing := filepath.Join(t.TempDir(), "no-such-checkpoint")
	for _, tc := range []struct{ what, path, class string }{
		{"a regular file", file, "InvalidArgument"},
		{"a relative path", "relative/image", "InvalidArgument"},
		{"a missing directory", missing, "NotFound"},
	} {
		id := "r" + RandID(6)
		b := NewBundle(t, t.TempDir(), NewSpec(SpecConfig{Args: loopArgs, CgroupsPath: env.CgroupParent + "/" + id}))
		_, err := api.Create(ctx, &taskv3.CreateTaskRequest{ID: id, Bundle: b.Dir, Checkpoint: tc.path})
		if err == nil {
			_, err = api.Start(ctx, &taskv3.StartRequest{ID: id})
			api.Delete(ctx, &taskv3.DeleteRequest{ID: id})
		}
		expectClass(t, "restore from "+tc.what, err, tc.class)
		runcDelete(c.RuncRoot, id)
	}
	if _, err := os.Stat(missing); err == nil {
		t.Errorf("a restore from %s made that directory", missing)
	}
	stop(t, ctx, c)
}

// A rootfs mount list the kernel refuses for what it says (an unknown
// filesystem type, a missing source, a bad option) is InvalidArgument.
// And a terminal the request asks for that the spec's process does not
// have (or the other way round) is too, not the runtime's Unknown.
func TestCreateMountsAndTerminalTheCallerGotWrong(t *testing.T) {
	env := NewEnv(t)
	c := env.Launch(t, Config{Mode: Bootstrap, Name: "rvm", Args: loopArgs, NullIO: true})
	ctx := TestContext(t, time.Minute)
	api := c.Task()
	try := func(what string, mut func(r *taskv3.CreateTaskRequest)) {
		t.Helper()
		id := "m" + RandID(6)
		b := NewBundle(t, t.TempDir(), NewSpec(SpecConfig{Args: loopArgs, CgroupsPath: env.CgroupParent + "/" + id}))
		r := &taskv3.CreateTaskRequest{ID: id, Bundle: b.Dir}
		mut(r)
		_, err := api.Create(ctx, r)
		if err == nil {
			api.Delete(ctx, &taskv3.DeleteRequest{ID: id})
		}
		expectClass(t, what, err, "InvalidArgument")
		runcDelete(c.RuncRoot, id)
		if err := unmountUnder(b.Dir); err != nil {
			t.Error(err)
		}
	}
	mounts := func(ms ...*types.Mount) func(*taskv3.CreateTaskRequest) {
		return func(r *taskv3.CreateTaskRequest) { r.Rootfs = ms }
	}
	try("rootfs mount of an unknown type", mounts(&types.Mount{Type: "bogusfs", Source: "none"}))
	try("rootfs mount with no type", mounts(&types.Mount{Source: "none"}))
	try("rootfs bind of a missing source", mounts(&types.Mount{Type: "bind", Source: "/nonexistent-src", Options: []string{"rbind"}}))
	try("rootfs overlay of missing layers", mounts(&types.Mount{Type: "overlay", Source: "overlay", Options: []string{"lowerdir=/nonexistent-a:/nonexistent-b"}}))
	try("rootfs tmpfs with a bad option", mounts(&types.Mount{Type: "tmpfs", Source: "tmpfs", Options: []string{"size=bogus"}}))
	try("terminal=true, the spec's process has none", func(r *taskv3.CreateTaskRequest) {
		io := NewStdio(t, StdioConfig{})
		r.Stdout, r.Terminal = io.Stdout, true
	})
}
