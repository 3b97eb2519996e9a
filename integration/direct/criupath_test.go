package direct

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	taskv3 "github.com/containerd/containerd/api/runtime/task/v3"
	runcopts "github.com/containerd/containerd/api/types/runc/options"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// The runc options' criu_path (field 8 of containerd.runc.v1.Options, which
// containerd 1.6 and 1.7 still send; removed from 2.x's API) names the CRIU
// binary the runtime runs for checkpoint and restore: the stock 1.6 and 1.7
// shims pass it as runc's global --criu. A CRIU newer than the distribution's
// (the usual reason to set it: an old one cannot work with a newer kernel, as
// here) must be the one run, for the checkpoint and for the restore.
func TestCriuPathOptionIsUsed(t *testing.T) {
	t.Parallel()
	if _, err := os.Stat("/usr/sbin/criu"); err != nil {
		t.Skip("no criu at /usr/sbin/criu to wrap")
	}
	dir := t.TempDir()
	criu, used := filepath.Join(dir, "my-criu"), filepath.Join(dir, "used")
	if err := os.WriteFile(criu, []byte("#!/bin/sh\necho \"$*\" >> "+used+"\nexec /usr/sbin/criu \"$@\"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	v, err := proto.Marshal(&runcopts.Options{})
	if err != nil {
		t.Fatal(err)
	}
	v = protowire.AppendTag(v, 8, protowire.BytesType) // criu_path, as containerd 1.6/1.7 encode it
	v = protowire.AppendString(v, criu)
	opts := &anypb.Any{TypeUrl: "containerd.runc.v1.Options", Value: v}

	env := NewEnv(t)
	ctx := TestContext(t, time.Minute)

	// Checkpoint.
	c := env.Run(t, Config{Mode: Bootstrap, Name: "criup", Args: loopArgs, NullIO: true, Options: opts})
	start(t, ctx, c, "")
	_, cerr := c.Task().Checkpoint(ctx, &taskv3.CheckpointTaskRequest{ID: c.ID, Path: t.TempDir()})
	t.Logf("checkpoint: %v", cerr)
	if _, err := os.Stat(used); err != nil {
		t.Errorf("checkpoint did not run the CRIU the options name (%s): %v", criu, cerr)
	}
	stop(t, ctx, c)

	// Restore.
	os.Remove(used)
	img := t.TempDir()
	if err := os.WriteFile(filepath.Join(img, "descriptors.json"), []byte(`["/dev/null","/dev/null","/dev/null"]`), 0o600); err != nil {
		t.Fatal(err)
	}
	r := env.Launch(t, Config{Mode: Bootstrap, Name: "criur", Args: loopArgs, NullIO: true, Options: opts})
	req := r.CreateRequest()
	req.Checkpoint = img
	if _, err := r.Task().Create(ctx, req); err != nil {
		t.Fatal(err)
	}
	_, rerr := r.Task().Start(ctx, &taskv3.StartRequest{ID: r.ID})
	t.Logf("restore: %v", rerr)
	if _, err := os.Stat(used); err != nil {
		t.Errorf("restore did not run the CRIU the options name (%s): %v", criu, rerr)
	}
	deleteTask(t, ctx, r, "")
}
