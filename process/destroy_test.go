package process

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/example/containerd-shim-example-v2/oci"
	"github.com/example/containerd-shim-example-v2/reaper"
)

// A Delete whose deadline passes while the runtime deletes must not take the
// runtime calls that deadline killed for a container that is gone: the task
// would be forgotten with the runtime's state left behind. The fake runtime
// here is slow to delete unless forced, and keeps its container in a file.
func TestDestroyOutlivesTheRequestsDeadline(t *testing.T) {
	dir := t.TempDir()
	state := filepath.Join(dir, "container")
	if err := os.WriteFile(state, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("FAKE_CONTAINER", state)
	rt, _ := fakeRuntime(t, dir, `
delete) [ -n "$force" ] || { sleep 1; exit 1; }; rm -f "$FAKE_CONTAINER";;
state) [ -e "$FAKE_CONTAINER" ] || { echo "container does not exist" >&2; exit 1; }; echo '{}';;`)
	c := &Container{ID: "c", Bundle: dir, rt: rt}

	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	err := c.destroy(ctx, false)
	_, statErr := os.Stat(state)
	switch {
	case err == nil && statErr == nil:
		t.Fatal("destroy reported the container deleted; the runtime still has it")
	case err != nil && statErr != nil:
		t.Fatalf("destroy failed (%v) though the runtime's forced delete removed the container", err)
	case err != nil:
		t.Fatalf("destroy: %v (the forced delete ran out of time with the request)", err)
	}
}

// A runtime that hangs on the forced delete and on the question whether the
// container is still there: no answer is no proof that it is gone, so the
// Delete fails (and containerd may retry) instead of forgetting the task.
func TestDestroyWithARuntimeThatHangs(t *testing.T) {
	defer func(c, s time.Duration) { cleanupTimeout, stateCheckTimeout = c, s }(cleanupTimeout, stateCheckTimeout)
	cleanupTimeout, stateCheckTimeout = 300*time.Millisecond, 300*time.Millisecond
	dir := t.TempDir()
	rt, _ := fakeRuntime(t, dir, `
delete) [ -n "$force" ] && exec sleep 30; exit 1;;
state) exec sleep 30;;`)
	c := &Container{ID: "c", Bundle: dir, rt: rt}
	if err := c.destroy(context.Background(), false); err == nil {
		t.Fatal("destroy reported the container deleted though the runtime never answered")
	}
}

// fakeRuntime writes a runtime script into dir that runs the case arms
// given on its command ($cmd: create, start, delete, state, kill, exec, ps;
// $force set by --force) and refuses any other, and returns it with a
// running reaper (stopped at the test's end).
func fakeRuntime(t *testing.T, dir, arms string) (oci.Runtime, *reaper.Reaper) {
	t.Helper()
	fake := filepath.Join(dir, "fake-runtime")
	script := "#!/bin/sh\n" +
		`for a; do case "$a" in --force) force=1;; create|start|delete|state|kill|exec|ps|restore|checkpoint|pause|resume|update) [ -z "$cmd" ] && cmd=$a;; esac; done` + "\n" +
		`case "$cmd" in` + arms + "\n*) echo \"$cmd refused\" >&2; exit 1;;\nesac\n"
	if err := os.WriteFile(fake, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	r := reaper.New()
	ctx, stop := context.WithCancel(context.Background())
	t.Cleanup(stop)
	go r.Run(ctx)
	return oci.Runtime{Binary: fake, Dir: dir, Reaper: r}, r
}
