package harness

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// FuseOverlayfsSnapshotterBinary is containerd's fuse-overlayfs snapshotter (a proxy plugin
// serving the snapshots API over gRPC), as scripts/deps.sh installs it; $FUSE_OVERLAYFS_SNAPSHOTTER
// overrides the path.
func FuseOverlayfsSnapshotterBinary() string {
	if p := os.Getenv("FUSE_OVERLAYFS_SNAPSHOTTER"); p != "" {
		return p
	}
	return "/opt/fuse-overlayfs-snapshotter/v2.1.7/containerd-fuse-overlayfs-grpc"
}

// StartFuseOverlayfsSnapshotter starts a private fuse-overlayfs snapshotter (own socket and
// root below BaseDir) and returns its socket, for WithProxySnapshotter. Its snapshots are
// mounted as type fuse3.fuse-overlayfs: by mount.fuse3, in containerd and in the shim. It is
// stopped (by PID) when the test ends.
func StartFuseOverlayfsSnapshotter(t testing.TB) string {
	t.Helper()
	bin := FuseOverlayfsSnapshotterBinary()
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("fuse-overlayfs snapshotter (make deps installs it): %v", err)
	}
	for _, helper := range []string{"mount.fuse3", "fuse-overlayfs"} {
		if _, err := exec.LookPath(helper); err != nil {
			t.Fatalf("%s (Debian's fuse3 and fuse-overlayfs; make deps installs them): %v", helper, err)
		}
	}
	if err := os.MkdirAll(BaseDir, 0o700); err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp(BaseDir, "fos-")
	if err != nil {
		t.Fatal(err)
	}
	socket := filepath.Join(dir, "fos.sock")
	logf, err := os.Create(filepath.Join(dir, "snapshotter.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, socket, filepath.Join(dir, "root"))
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", bin, err)
	}
	logf.Close()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		for _, m := range MountsUnder(dir) {
			_ = exec.Command("umount", "-l", m.Point).Run()
		}
		if t.Failed() {
			if b, err := os.ReadFile(filepath.Join(dir, "snapshotter.log")); err == nil {
				t.Logf("fuse-overlayfs snapshotter log:\n%s", b)
			}
		}
		_ = os.RemoveAll(dir)
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Stat(socket); err == nil {
			return socket
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s made no socket in 10 s", bin)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
