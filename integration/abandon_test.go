package integration

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/example/containerd-shim-example-v2/integration/harness"
)

// A shim daemon that containerd started but never sent a Create (containerd died in
// between) leaves on its own once it has held no task and heard no request for the
// abandonment timeout (EXAMPLE_SHIM_ABANDON_TIMEOUT, shortened here to 1 s), and removes
// its socket. The shim is started the way containerd starts it; no containerd is involved.
func TestAbandonedDaemonLeaves(t *testing.T) {
	if harness.Runtime() != "io.example.v2" {
		t.Skipf("the abandonment timeout is io.example.v2's, not %s's", harness.Runtime())
	}
	bundle := t.TempDir()
	if err := os.WriteFile(filepath.Join(bundle, "config.json"), []byte(`{"ociVersion":"1.0.2"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	// A plain file where containerd would put the log FIFO: the daemon
	// writes its log, and the Go runtime a panic, there, for the failure
	// message of a daemon that is missing.
	daemonLog := filepath.Join(bundle, "log")
	if err := os.WriteFile(daemonLog, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	id := "ab-" + harness.RandID(8)
	ns := "ex-abandon"
	cmd := exec.Command(harness.ShimUnderTest(), "-namespace", ns, "-id", id, "-address", filepath.Join(bundle, "no-containerd.sock"), "start")
	cmd.Dir = bundle
	cmd.Env = append(os.Environ(), "EXAMPLE_SHIM_ABANDON_TIMEOUT=1s", "TTRPC_ADDRESS="+filepath.Join(bundle, "no-containerd.sock.ttrpc"))
	var out, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	// Before start: the daemon's clock runs from its own start, which is
	// earlier than anything measured after start returns.
	started := time.Now()
	if err := cmd.Run(); err != nil {
		t.Fatalf("start: %v (%s)", err, stderr.String())
	}
	socket := strings.TrimPrefix(strings.TrimSpace(out.String()), "unix://")
	daemons := harness.Processes(func(args []string) bool {
		return len(args) > 0 && filepath.Base(args[0]) == harness.ShimBinaryName && slices.Contains(args, id) && slices.Contains(args, socket)
	})
	if len(daemons) != 1 {
		// Tells a daemon that died (its log, no process of the id) from one
		// the match missed (a process of the id with other arguments).
		ofID := harness.Processes(func(args []string) bool { return slices.Contains(args, id) })
		logged, _ := os.ReadFile(daemonLog)
		t.Fatalf("daemons for %s with socket %q: %v, want one; processes naming the id: %v; daemon's log: %q",
			id, socket, daemons, ofID, logged)
	}
	daemon := daemons[0]
	t.Cleanup(func() {
		if harness.PidExists(daemon.Pid) {
			_ = syscall.Kill(daemon.Pid, syscall.SIGKILL)
		}
		_ = os.Remove(socket)
	})
	if _, err := os.Stat(socket); err != nil {
		t.Fatalf("socket %s after start: %v", socket, err)
	}

	waitFor(t, 10*time.Second, "the abandoned daemon to exit", func() bool { return !harness.PidExists(daemon.Pid) })
	if took := time.Since(started); took < time.Second {
		t.Errorf("daemon left after %v, before its 1 s abandonment timeout", took)
	}
	if _, err := os.Stat(socket); !os.IsNotExist(err) {
		t.Errorf("socket %s still there after the daemon left (%v)", socket, err)
	}
}
