package process

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	shimio "github.com/example/containerd-shim-example-v2/io"
	"github.com/example/containerd-shim-example-v2/oci"
	"github.com/example/containerd-shim-example-v2/reaper"
)

// fakeRuntime is a runtime binary that appends each call's operation and
// container id to a log; `delete` fails while the file failDelete exists.
// Every other operation succeeds, except `state` (no container exists).
type fakeRuntime struct {
	dir string
}

func newFakeRuntime(t *testing.T) fakeRuntime {
	t.Helper()
	dir := t.TempDir()
	script := `#!/bin/sh
log="` + dir + `/calls"
while [ $# -gt 0 ]; do
	case "$1" in
	--root|--log|--log-format) shift 2 ;;
	--*) shift ;;
	*) break ;;
	esac
done
echo "$*" >> "$log"
case "$1" in
delete) [ -e "` + dir + `/failDelete" ] && { echo "delete refused" >&2; exit 1; } ;;
state) exit 1 ;;
esac
exit 0
`
	if err := os.WriteFile(filepath.Join(dir, "runtime"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return fakeRuntime{dir: dir}
}

func (f fakeRuntime) calls(t *testing.T, op string) int {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(f.dir, "calls"))
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	n := 0
	for _, line := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(line, op+" ") {
			n++
		}
	}
	return n
}

// The exit callback does not wait for the runtime's delete: an upgrade
// pauses the reaper (which then collects no exit, the runtime's included)
// until every exit callback has returned.
func TestExitCallbackDoesNotWaitForRuntimeDelete(t *testing.T) {
	f := newFakeRuntime(t)
	c := newTestContainer(t, f)
	if !c.rt.Reaper.Pause(time.Second) {
		t.Fatal("reaper did not pause")
	}
	returned := make(chan struct{})
	go func() {
		c.initExited(reaper.Exit{Pid: 4242, Status: 0, Time: time.Now()})
		close(returned)
	}()
	select {
	case <-returned:
	case <-time.After(3 * time.Second):
		c.rt.Reaper.Resume()
		t.Fatal("the exit callback waited for the runtime delete while the reaper was paused")
	}
	c.rt.Reaper.Resume()
	var e *eagerDelete
	for deadline := time.Now().Add(5 * time.Second); e == nil && time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		c.mu.Lock()
		e = c.reclaim.started
		c.mu.Unlock()
	}
	if e == nil {
		t.Fatal("no runtime delete began")
	}
	select {
	case <-e.done:
	case <-time.After(5 * time.Second):
		t.Fatal("the runtime delete did not end once the reaper resumed")
	}
	if e.err != nil || f.calls(t, "delete") != 1 {
		t.Errorf("runtime delete: %v, %d calls; want success, 1 call", e.err, f.calls(t, "delete"))
	}
}

// newTestContainer returns a started container (no real process) whose
// runtime is f, with a reaper running until the test ends.
func newTestContainer(t *testing.T, f fakeRuntime) *Container {
	t.Helper()
	r := reaper.New()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go r.Run(ctx)
	c := &Container{
		ID:       "c1",
		Bundle:   t.TempDir(),
		rt:       oci.Runtime{Binary: filepath.Join(f.dir, "runtime"), Reaper: r},
		ownPIDNS: true,
		execs:    map[string]*Process{},
	}
	c.execsIdle = sync.NewCond(&c.mu)
	c.init = newProcess(c, "", shimio.Config{}, nil)
	c.init.status, c.init.pid = Running, 4242
	return c
}

// exited reports the init's exit as the reaper would and waits for the
// runtime delete it may start.
func exited(t *testing.T, c *Container, status int) {
	t.Helper()
	c.initExited(reaper.Exit{Pid: 4242, Status: status, Time: time.Now()})
	// The eager deletion begins on a goroutine; give it the time to claim it.
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		c.mu.Lock()
		e, closed := c.reclaim.started, c.reclaim.closed || c.reclaim.checkpointing
		c.mu.Unlock()
		if e != nil {
			<-e.done
			return
		}
		if closed {
			// Not started, and it never will be: Delete or a checkpoint owns it.
			time.Sleep(50 * time.Millisecond)
			return
		}
		time.Sleep(time.Millisecond)
	}
	t.Fatal("no runtime delete began after the exit")
}

func deleteInit(t *testing.T, c *Container) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.init.Delete(ctx, func(Snapshot) {}); err != nil {
		t.Fatalf("Delete: %v", err)
	}
}

// The runtime deletes the container once, at the init's exit, and Delete
// then finds it done.
func TestRuntimeDeletedAtExit(t *testing.T) {
	f := newFakeRuntime(t)
	c := newTestContainer(t, f)
	exited(t, c, 3)
	if n := f.calls(t, "delete"); n != 1 {
		t.Fatalf("runtime delete calls after the exit: %d, want 1", n)
	}
	deleteInit(t, c)
	if n := f.calls(t, "delete"); n != 1 {
		t.Errorf("runtime delete calls after Delete: %d, want still 1", n)
	}
	if st := c.init.State(); st.Status != Deleted || st.ExitCode != 3 {
		t.Errorf("after Delete: %+v, want deleted with exit 3", st)
	}
}

// A failed deletion at the exit is not the last word: Delete runs its own.
func TestRuntimeDeleteRetriedByDelete(t *testing.T) {
	f := newFakeRuntime(t)
	c := newTestContainer(t, f)
	if err := os.WriteFile(filepath.Join(f.dir, "failDelete"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	exited(t, c, 0)
	if n := f.calls(t, "delete"); n != 1 {
		t.Fatalf("runtime delete calls after the exit: %d, want 1", n)
	}
	if err := os.Remove(filepath.Join(f.dir, "failDelete")); err != nil {
		t.Fatal(err)
	}
	deleteInit(t, c)
	if n := f.calls(t, "delete"); n != 2 {
		t.Errorf("runtime delete calls after Delete: %d, want 2 (the exit's, failed, and Delete's)", n)
	}
}

// An exit during a checkpoint that stops the container is the checkpoint's:
// its runtime removes the container, and only Delete calls delete, once.
func TestNoRuntimeDeleteAfterCheckpointExit(t *testing.T) {
	f := newFakeRuntime(t)
	c := newTestContainer(t, f)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Checkpoint(ctx, oci.CheckpointOpts{ImagePath: t.TempDir()}); err != nil {
		t.Fatalf("Checkpoint: %v", err)
	}
	exited(t, c, 137)
	if n := f.calls(t, "delete"); n != 0 {
		t.Fatalf("runtime delete calls after the checkpoint's exit: %d, want 0", n)
	}
	deleteInit(t, c)
	if n := f.calls(t, "delete"); n != 1 {
		t.Errorf("runtime delete calls after Delete: %d, want 1", n)
	}
}

// Once Delete has begun, an exit arriving later (the kill of a created,
// never-started init) leaves the runtime to Delete.
func TestNoRuntimeDeleteAfterDeleteBegan(t *testing.T) {
	f := newFakeRuntime(t)
	c := newTestContainer(t, f)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if ok, err := c.runtimeReclaimed(ctx); ok || err != nil {
		t.Fatalf("runtimeReclaimed before any exit: %v, %v; want false, nil", ok, err)
	}
	exited(t, c, 137)
	if n := f.calls(t, "delete"); n != 0 {
		t.Errorf("runtime delete calls after an exit that followed Delete: %d, want 0", n)
	}
}
