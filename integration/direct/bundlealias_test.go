package direct

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	taskv3 "github.com/containerd/containerd/api/runtime/task/v3"
)

// A bundle is claimed by what it is, not by how it is named: a second task
// whose bundle path is a symlink to a live task's bundle is refused
// (InvalidArgument), as the same path already is. Sharing it, the two
// tasks' runtime, pid, exit and address files overwrite each other.
func TestBundleAliasRefused(t *testing.T) {
	t.Parallel()
	env := NewEnv(t)
	c := env.Run(t, Config{Mode: Bootstrap, Name: "alias", Args: loopArgs, NullIO: true})
	ctx := TestContext(t, time.Minute)
	link := filepath.Join(t.TempDir(), "bundle")
	if err := os.Symlink(c.Bundle.Dir, link); err != nil {
		t.Fatal(err)
	}
	const other = "alias-other"
	t.Cleanup(func() {
		if err := c.Shim.Kill(); err != nil {
			t.Error(err)
		}
		if err := runcDelete(c.RuncRoot, other); err != nil {
			t.Error(err)
		}
	})
	_, err := c.Task().Create(ctx, &taskv3.CreateTaskRequest{ID: other, Bundle: link})
	expectClass(t, "Create in a symlink to a live task's bundle", err, "InvalidArgument")
	if err == nil {
		if _, err := c.Task().Delete(ctx, &taskv3.DeleteRequest{ID: other}); err != nil {
			t.Errorf("Delete %s: %v", other, err)
		}
	}
	// The first task is untouched.
	start(t, ctx, c, "")
	stop(t, ctx, c)
}
