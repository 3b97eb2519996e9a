package direct

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// A binary:// logger that stops reading while the container runs (here it
// reads one line and exits, as a crashing logger would) must not take the
// container with it: containerd's own shim keeps the pipes' read ends, so
// the container's later writes do not end in SIGPIPE. seq, writing after the
// logger is gone, must finish (exit status 0, not 141).
func TestBinaryLoggerExitingEarly(t *testing.T) {
	t.Parallel()
	env := NewEnv(t)
	dir := t.TempDir()
	logger := filepath.Join(dir, "logger")
	script := "#!/bin/sh\nexec 5>&-\nhead -n 1 <&3 >" + filepath.Join(dir, "got") + "\n"
	if err := os.WriteFile(logger, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	c := env.Launch(t, Config{Mode: Bootstrap, Name: "logger", NullIO: true,
		Args: []string{"sh", "-c", "echo first; sleep 1; seq 1 100000; exit $?"}})
	ctx := TestContext(t, time.Minute)
	r := c.CreateRequest()
	r.Stdout, r.Stderr = "binary://"+logger, "binary://"+logger
	resp, err := c.Task().Create(ctx, r)
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	c.Pid = resp.GetPid()
	start(t, ctx, c, "")
	if got := wait(t, ctx, c, "").GetExitStatus(); got != 0 {
		t.Errorf("exit status %d, want 0 (141: the container died of SIGPIPE once its logger had gone)", got)
	}
	if got, _ := os.ReadFile(filepath.Join(dir, "got")); string(got) != "first\n" {
		t.Errorf("the logger read %q, want %q", got, "first\n")
	}
	deleteTask(t, ctx, c, "")
}
