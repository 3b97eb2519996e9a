package direct

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	taskv3 "github.com/containerd/containerd/api/runtime/task/v3"
	tasktypes "github.com/containerd/containerd/api/types/task"
	"golang.org/x/sys/unix"
)

// A restore that CRIU fails says why, in CRIU's words, and where CRIU's log
// is. The runtime's own message is "criu failed: type RESTORE errno 0 / log
// file: restore.log": a name relative to a directory the caller does not
// see, and no reason. The image here holds only the stdio record runc reads
// first, so the restore gets as far as CRIU and fails there: on a kernel
// CRIU cannot work with (this machine's) as on one it can (nothing to
// restore). The image directory is read-only: CRIU's files go to a work
// directory of the task's (as with the stock shim), not into the image,
// where CRIU could not even open its log. The task stays created, and is
// deleted cleanly.
func TestRestoreFailureQuotesCRIU(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("criu"); err != nil {
		t.Skip("no criu: the runtime fails before CRIU could log anything")
	}
	env := NewEnv(t)
	c := env.Launch(t, Config{Mode: Bootstrap, Name: "rstfail", Args: loopArgs, NullIO: true})
	ctx := TestContext(t, time.Minute)
	img := readOnlyImage(t, map[string]string{"descriptors.json": `["/dev/null","/dev/null","/dev/null"]`})
	r := c.CreateRequest()
	r.Checkpoint = img
	if _, err := c.Task().Create(ctx, r); err != nil {
		t.Fatalf("Create from %s: %v", img, err)
	}
	_, err := c.Task().Start(ctx, &taskv3.StartRequest{ID: c.ID})
	if err == nil {
		t.Fatalf("restore from an image without processes succeeded")
	}
	log := filepath.Join(c.Bundle.Dir, "criu-work", "restore.log")
	data, rerr := os.ReadFile(log)
	if rerr != nil {
		t.Fatalf("CRIU left no log in the task's work directory (%v); restore error: %v", rerr, err)
	}
	if !strings.Contains(err.Error(), log) {
		t.Errorf("restore error does not name CRIU's log %s: %v", log, err)
	}
	if last := lastCRIUError(data); last == "" {
		t.Errorf("CRIU's log holds no error line:\n%s", data)
	} else if !strings.Contains(err.Error(), last) {
		t.Errorf("restore error does not quote CRIU's reason %q: %v", last, err)
	}
	expectStatus(t, ctx, c, "", tasktypes.Status_CREATED)
	deleteTask(t, ctx, c, "")
}

// readOnlyImage is a checkpoint image directory holding files, on a
// read-only tmpfs of its own (root writes through a directory's mode).
func readOnlyImage(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size=1m"); err != nil {
		t.Fatalf("mount a tmpfs for the image: %v", err)
	}
	t.Cleanup(func() { _ = unix.Unmount(dir, unix.MNT_DETACH) })
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := unix.Mount("", dir, "", unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
		t.Fatalf("make the image read-only: %v", err)
	}
	return dir
}

// lastCRIUError is the last line of a CRIU log that reports an error.
func lastCRIUError(log []byte) string {
	var last string
	for _, line := range bytes.Split(log, []byte("\n")) {
		if bytes.Contains(line, []byte("Error")) {
			last = string(bytes.TrimSpace(line))
		}
	}
	return last
}
