package integration

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/example/containerd-shim-example-v2/integration/harness"
)

// The two other ways ctr gives a container its root: `--read-only` (a view of the image:
// a read-only bind of the layer for a one-layer image) and `--rootfs <dir>` (no mounts at
// all; the spec names a directory of the host). Both run, and a read-only root refuses
// writes.
func TestReadOnlyAndHostDirectoryRootfs(t *testing.T) {
	busybox, err := exec.LookPath("busybox")
	if err != nil {
		t.Fatalf("busybox: %v", err)
	}
	forEachFlavor(t, func(t *testing.T, d *harness.Daemon) {
		ctx, ns := d.NewNamespace(t)
		ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()

		stdout, stderr, code, err := d.Ctr(ctx, ctrRun(d, "--rm", "--read-only", harness.ImageName, "ro",
			"sh", "-c", "head -n1 /etc/passwd; touch /new && echo wrote")...)
		if err != nil {
			t.Fatalf("ctr run --read-only: %v (stderr %q)", err, stderr)
		}
		if code == 0 || !strings.HasPrefix(stdout, "root:") || strings.Contains(stdout, "wrote") ||
			!strings.Contains(stderr, "Read-only file system") {
			t.Errorf("read-only root: exit %d, stdout %q, stderr %q; want the image read and the write refused", code, stdout, stderr)
		}
		expectNoLeftovers(t, d, ns, "ro")

		dir := filepath.Join(t.TempDir(), "root")
		if err := os.MkdirAll(filepath.Join(dir, "bin"), 0o755); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command("cp", busybox, filepath.Join(dir, "bin", "sh")).CombinedOutput(); err != nil {
			t.Fatalf("cp: %v: %s", err, out)
		}
		stdout, stderr, code, err = d.Ctr(ctx, ctrRun(d, "--rm", "--rootfs", dir, "hostdir",
			"/bin/sh", "-c", "echo from the host dir; echo >/written; exit 4")...)
		if err != nil {
			t.Fatalf("ctr run --rootfs: %v (stderr %q)", err, stderr)
		}
		if code != 4 || stdout != "from the host dir\n" {
			t.Errorf("host directory root: exit %d, stdout %q, stderr %q; want 4 and the echo", code, stdout, stderr)
		}
		if _, err := os.Stat(filepath.Join(dir, "written")); err != nil {
			t.Errorf("the container's write did not land in the host directory: %v", err)
		}
		expectNoLeftovers(t, d, ns, "hostdir")
	})
}
