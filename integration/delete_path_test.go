package integration

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/containerd/api/types/runc/options"
	"github.com/containerd/containerd/v2/pkg/cio"

	"github.com/example/containerd-shim-example-v2/integration/harness"
)

// containerd 2.x gives shims the shim manager's `env` on `start` only, never on the
// `delete` it runs once a shim has died (PROTOCOL.md §1.5). A runtime the shim found
// through a PATH given there (the task's BinaryName names it) must still be what that
// `delete` runs: the killed shim's container goes, with its runtime state, instead of
// running on with nothing to manage it. (The stock shim records the name only.)
func TestDeleteRunsTheRuntimeFoundOnTheShimsPath(t *testing.T) {
	if harness.Runtime() != harness.DefaultRuntime {
		t.Skipf("%s records its runtime by name only", harness.Runtime())
	}
	runc := harness.RuncUnderTest()
	if runc == "" {
		var err error
		if runc, err = exec.LookPath("runc"); err != nil {
			t.Fatalf("no runc: %v", err)
		}
	}
	dir := t.TempDir()
	const wrapper = "example-shim-test-runtime"
	if err := os.WriteFile(filepath.Join(dir, wrapper), []byte("#!/bin/sh\nexec "+runc+" \"$@\"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	d := harness.StartDaemon(t, harness.Flavor2x, harness.WithShimEnv("PATH="+dir+":"+os.Getenv("PATH")))
	ctx, ns := d.NewNamespace(t)
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	const id = "dp1"
	img, err := d.Client().GetImage(ctx, harness.ImageName)
	if err != nil {
		t.Fatal(err)
	}
	ctr, err := newContainerWithOptions(ctx, d, img, id, loopArgs, &options.Options{BinaryName: wrapper})
	if err != nil {
		t.Fatal(err)
	}
	task, wait := startTask(t, ctx, ctr, cio.NullIO)
	initPid := int(task.Pid())
	shim := onlyShim(t, d, ns, id)
	if err := syscall.Kill(shim.Pid, syscall.SIGKILL); err != nil {
		t.Fatalf("kill shim %d: %v", shim.Pid, err)
	}
	select {
	case st := <-wait:
		code, _, err := st.Result()
		t.Logf("Wait after the shim's death: code %d err %v", code, err)
	case <-time.After(crashCleanupTimeout):
		t.Errorf("Wait did not return within %v of the shim's death", crashCleanupTimeout)
	}
	if !eventually(10*time.Second, func() bool { return !harness.PidExists(initPid) }) {
		t.Errorf("container init %d still runs after containerd's delete of the dead shim", initPid)
	}
	expectNoLeftovers(t, d, ns, id)
}
