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
)

// A restore that CRIU fails says why, in CRIU's words, and where CRIU's log
// is. The runtime's own message is "criu failed: type RESTORE errno 0 / log
// file: restore.log": a name relative to a directory the caller does not
// see (the image directory, when no work path is set), and no reason. The
// image here holds only the stdio record runc reads first, so the restore
// gets as far as CRIU and fails there: on a kernel CRIU cannot work with
// (this machine's) as on one it can (nothing to restore). The task stays
// created, and is deleted cleanly.
func TestRestoreFailureQuotesCRIU(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("criu"); err != nil {
		t.Skip("no criu: the runtime fails before CRIU could log anything")
	}
	env := NewEnv(t)
	c := env.Launch(t, Config{Mode: Bootstrap, Name: "rstfail", Args: loopArgs, NullIO: true})
	ctx := TestContext(t, time.Minute)
	img := t.TempDir()
	if err := os.WriteFile(filepath.Join(img, "descriptors.json"), []byte(`["/dev/null","/dev/null","/dev/null"]`), 0o600); err != nil {
		t.Fatal(err)
	}
	r := c.CreateRequest()
	r.Checkpoint = img
	if _, err := c.Task().Create(ctx, r); err != nil {
		t.Fatalf("Create from %s: %v", img, err)
	}
	_, err := c.Task().Start(ctx, &taskv3.StartRequest{ID: c.ID})
	if err == nil {
		t.Fatalf("restore from an image without processes succeeded")
	}
	log := filepath.Join(img, "restore.log")
	data, rerr := os.ReadFile(log)
	if rerr != nil {
		t.Fatalf("CRIU left no log (%v); restore error: %v", rerr, err)
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
