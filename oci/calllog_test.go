package oci

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/example/containerd-shim-example-v2/reaper"
)

// Two runtime calls on one container that overlap and both fail (an exec's
// start and a pause meeting the init's death) each report their own error,
// not the one the other appended to the container's log meanwhile; the
// container's log still gets both.
func TestOverlappingCallsReportTheirOwnErrors(t *testing.T) {
	r := reaper.New()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go r.Run(ctx)
	dir := t.TempDir()
	fake := filepath.Join(dir, "fake-runtime")
	// "exec" says it runs, waits for "pause" to have logged its error,
	// logs its own, and fails; "pause" waits for "exec" to run, logs its
	// error, lets "exec" log, waits for that, and fails. Each line goes to
	// the --log the call was given.
	script := `#!/bin/sh
log=$2
await() { while [ ! -e "$1" ]; do sleep 0.01; done; }
case "$5" in
exec)
	: >"$OCI_TEST_DIR/exec-runs"
	await "$OCI_TEST_DIR/pause-logged"
	echo '{"level":"error","msg":"exec: its own error"}' >>"$log"
	: >"$OCI_TEST_DIR/exec-logged"
	exit 1;;
pause)
	await "$OCI_TEST_DIR/exec-runs"
	echo '{"level":"error","msg":"pause: its own error"}' >>"$log"
	: >"$OCI_TEST_DIR/pause-logged"
	await "$OCI_TEST_DIR/exec-logged"
	exit 1;;
esac
`
	if err := os.WriteFile(fake, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("OCI_TEST_DIR", dir)
	shared := filepath.Join(dir, "log.json")
	rt := &Runtime{Binary: fake, Dir: dir, Reaper: r, LogPath: shared}
	execErr := make(chan error, 1)
	go func() {
		_, err := rt.run(ctx, nil, nil, "exec", "c1")
		execErr <- err
	}()
	_, pauseErr := rt.run(ctx, nil, nil, "pause", "c1")
	for _, c := range []struct {
		op   string
		err  error
		want string
	}{{"pause", pauseErr, "pause: its own error"}, {"exec", <-execErr, "exec: its own error"}} {
		var oe *Error
		if !errors.As(c.err, &oe) || oe.Message != c.want {
			t.Errorf("%s: error %v, want the message %q", c.op, c.err, c.want)
		}
	}
	data, err := os.ReadFile(shared)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(data), "pause: its own error") || !strings.Contains(string(data), "exec: its own error") {
		t.Errorf("container's log: %q, want both calls' lines", data)
	}
	left, _ := filepath.Glob(filepath.Join(dir, ".log.json.*"))
	if len(left) > 0 {
		t.Errorf("calls' own logs left behind: %v", left)
	}
}
