package integration

import (
	"context"
	"testing"
	"time"

	"github.com/example/containerd-shim-example-v2/integration/harness"
)

// Task API v3 by opt-in (docs/kubernetes.md): with EXAMPLE_SHIM_TASK_API=3 in the shim
// manager's env, containerd 2.x is told version 3 and talks containerd.task.v3.Task. A CRI
// pod (sandbox and an app container in one shim, exit code, log) and a plain `ctr run` both
// work that way, and containerd records version 3 in the bundles' bootstrap.json.
func TestTaskAPIv3OptIn(t *testing.T) {
	if harness.Runtime() != "io.example.v2" {
		t.Skipf("the opt-in is io.example.v2's, not %s's", harness.Runtime())
	}
	d, cri := harness.StartCRIDaemon(t, harness.Flavor2x, harness.WithShimEnv("EXAMPLE_SHIM_TASK_API=3"))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	pod := runCRIPod(t, ctx, d, cri, "pod-"+harness.RandID(6))
	if v := bootstrapVersionOf(t, d, harness.CRINamespace, pod.id); v != 3 {
		t.Errorf("the pod's bootstrap.json says task API version %d, want 3", v)
	}
	runCRIAppToExit(t, ctx, cri, pod, "app", "echo over-v3; exit 3", 3, []string{"stdout over-v3"})
	if shims := d.ShimProcesses(harness.CRINamespace, ""); len(shims) != 1 {
		t.Errorf("shim processes for the pod: %v, want one", shims)
	}

	cctx, ns := d.NewNamespace(t)
	cctx, ccancel := context.WithTimeout(cctx, 30*time.Second)
	defer ccancel()
	stdout, stderr, code, err := d.Ctr(cctx, ctrRun(d, "-d", harness.ImageName, "v3", "sleep", "100000")...)
	if err != nil || code != 0 {
		t.Fatalf("ctr run -d: code %d %v (%s %s)", code, err, stdout, stderr)
	}
	if v := bootstrapVersionOf(t, d, ns, "v3"); v != 3 {
		t.Errorf("ctr's task: bootstrap.json says version %d, want 3", v)
	}
	out := ctrOK(t, cctx, d, "task", "exec", "--fifo-dir", d.FIFODir, "--exec-id", "x", "v3", "sh", "-c", "echo exec-over-v3")
	if out != "exec-over-v3\n" {
		t.Errorf("exec output %q, want %q", out, "exec-over-v3\n")
	}
	ctrOK(t, cctx, d, "task", "kill", "-s", "SIGKILL", "v3")
	waitTaskStatus(t, cctx, d, "v3", "STOPPED", 10*time.Second)
	ctrOK(t, cctx, d, "task", "delete", "v3")
	ctrOK(t, cctx, d, "container", "delete", "v3")
	expectNoLeftovers(t, d, ns, "v3")
}
