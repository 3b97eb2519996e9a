package process

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/containerd/errdefs"

	shimio "github.com/example/containerd-shim-example-v2/io"
	"github.com/example/containerd-shim-example-v2/oci"
)

// Two Deletes of one stopped task at once (a client retrying one that timed
// out): the runtime's delete runs once, the second Delete waits for the
// first and answers NotFound. Both used to tear the container down, and the
// later one's runtime delete could reach a new task created meanwhile under
// the same id. (From a review.)
func TestConcurrentDeletesTearDownOnce(t *testing.T) {
	c, _, dir := execTestContainer(t, `
delete) echo delete >> "$FAKE_DIR/calls"; sleep 0.3;;`)
	c.init.status = Stopped
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = c.init.Delete(context.Background(), func(Snapshot) {})
		}()
	}
	wg.Wait()
	calls, _ := os.ReadFile(filepath.Join(dir, "calls"))
	if n := strings.Count(string(calls), "delete"); n != 1 {
		t.Errorf("the runtime's delete ran %d times, want 1", n)
	}
	ok, notFound := 0, 0
	for _, err := range errs {
		switch {
		case err == nil:
			ok++
		case errors.Is(err, errdefs.ErrNotFound):
			notFound++
		default:
			t.Errorf("Delete: %v", err)
		}
	}
	if ok != 1 || notFound != 1 {
		t.Errorf("Delete answers %v; want one success and one NotFound", errs)
	}
}

// No exec joins a container once its init's Delete has released the execs:
// an Exec that checked the init before the Delete (its spec being read
// meanwhile) is refused NotFound, not added to a container that is gone
// (with /tasks/exec-added after /tasks/delete). (From a review.)
func TestNoExecAfterTheExecsAreReleased(t *testing.T) {
	c, _, _ := execTestContainer(t, "")
	c.releaseExecs()
	_, err := c.Exec("late", []byte(`{"args":["true"],"cwd":"/"}`), shimio.Config{})
	if !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("Exec after the execs were released: %v, want NotFound", err)
	}
	if _, err := c.Process("late"); err == nil {
		t.Error("the refused exec was added")
	}
}

// A second Checkpoint while one runs is refused FailedPrecondition: CRIU
// cannot dump one process tree twice at once, and the two shared the
// default work directory, which the first to end removed under the other
// (which failed as Unknown). (From a review.)
func TestSecondCheckpointWhileOneRunsIsRefused(t *testing.T) {
	c, _, dir := execTestContainer(t, `
checkpoint) touch "$FAKE_DIR/dumping"; sleep 0.5;;`)
	first := make(chan error, 1)
	go func() {
		first <- c.Checkpoint(context.Background(), oci.CheckpointOpts{ImagePath: filepath.Join(dir, "img1"), LeaveRunning: true}, func() {})
	}()
	waitUntil(t, "the first checkpoint runs", func() bool {
		_, err := os.Stat(filepath.Join(dir, "dumping"))
		return err == nil
	})
	err := c.Checkpoint(context.Background(), oci.CheckpointOpts{ImagePath: filepath.Join(dir, "img2"), LeaveRunning: true}, func() {})
	if !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Errorf("a second Checkpoint while one runs: %v, want FailedPrecondition", err)
	}
	if err := <-first; err != nil {
		t.Errorf("the first Checkpoint: %v", err)
	}
}
