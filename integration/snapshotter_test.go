package integration

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/example/containerd-shim-example-v2/integration/harness"
)

// containerd's blockfile snapshotter keeps each snapshot as a filesystem image and hands
// the rootfs to the shim as {Type: ext4, Source: <image>, Options: [loop, rw]}. The shim
// mounts it from a loop device, as the stock shim does (before, the "loop" word went to
// ext4, which refused the image file as its device: the task failed to create). The
// container reads the image's files and writes its own, and the device is freed with the
// rootfs at Delete.
func TestBlockfileSnapshotterRootfs(t *testing.T) {
	for _, flavor := range []string{harness.Flavor2x, "2.2"} {
		t.Run("containerd-"+flavor, func(t *testing.T) {
			d := harness.StartDaemon(t, flavor, harness.WithBlockfileSnapshotter())
			got := runOnSnapshotter(t, d, "blockfile")
			for _, want := range []string{"root on /dev/loop", " ext4"} {
				if !strings.Contains(got, want) {
					t.Errorf("output %q lacks %q", got, want)
				}
			}
			deadline := time.Now().Add(5 * time.Second)
			for len(loopDevicesUnder(d.Root)) > 0 {
				if time.Now().After(deadline) {
					t.Fatalf("loop devices left after Delete: %v", loopDevicesUnder(d.Root))
				}
				time.Sleep(20 * time.Millisecond)
			}
		})
	}
}

// containerd's fuse-overlayfs snapshotter (a proxy plugin) hands the rootfs to the shim as
// {Type: fuse3.fuse-overlayfs, Source: overlay, Options: [lowerdir=..., upperdir=...,
// workdir=...]}. The shim mounts it through mount.fuse3, as the stock shim does (before, it
// gave the type to mount(2): "no such device"), and the FUSE server that serves it is gone
// after Delete.
func TestFuseOverlayfsSnapshotterRootfs(t *testing.T) {
	for _, flavor := range harness.AllFlavors {
		t.Run("containerd-"+flavor, func(t *testing.T) {
			socket := harness.StartFuseOverlayfsSnapshotter(t)
			d := harness.StartDaemon(t, flavor, harness.WithProxySnapshotter("fuse-overlayfs", socket))
			got := runOnSnapshotter(t, d, "fuse-overlayfs")
			if !strings.Contains(got, "root on fuse-overlayfs fuse.fuse-overlayfs") {
				t.Errorf("output %q: want the root on fuse.fuse-overlayfs", got)
			}
			deadline := time.Now().Add(5 * time.Second)
			for len(fuseServersUnder(d.State)) > 0 {
				if time.Now().After(deadline) {
					t.Fatalf("fuse-overlayfs servers left after Delete: %v", fuseServersUnder(d.State))
				}
				time.Sleep(20 * time.Millisecond)
			}
		})
	}
}

// runOnSnapshotter runs, with `ctr run --rm --snapshotter`, a container of the test image
// unpacked for that snapshotter: it reads the image, writes a file of its own and prints what
// its root is mounted from. It returns the container's output.
func runOnSnapshotter(t *testing.T, d *harness.Daemon, snapshotter string) string {
	t.Helper()
	ctx, ns := d.NewNamespace(t)
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if _, err := harness.ImportImage(ctx, d.Client(), snapshotter); err != nil {
		t.Fatal(err)
	}
	stdout, stderr, code, err := d.Ctr(ctx, ctrRun(d, "--rm", "--snapshotter", snapshotter, harness.ImageName, "snap", "sh", "-c",
		`head -n1 /etc/passwd && echo written >/new && cat /new && awk '$2 == "/" {print "root on " $1 " " $3}' /proc/mounts`)...)
	if err != nil || code != 0 {
		t.Fatalf("ctr run: exit %d, %v (stdout %q, stderr %q)", code, err, stdout, stderr)
	}
	for _, want := range []string{"root:x:0:0:", "written\n"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("output %q lacks %q", stdout, want)
		}
	}
	expectNoLeftovers(t, d, ns, "snap")
	return stdout
}

// loopDevicesUnder lists the loop devices whose backing file is below dir.
func loopDevicesUnder(dir string) []string {
	var devs []string
	files, _ := filepath.Glob("/sys/block/loop*/loop/backing_file")
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err == nil && strings.HasPrefix(strings.TrimSpace(string(b)), dir+"/") {
			devs = append(devs, strings.Split(f, "/")[3])
		}
	}
	return devs
}

// fuseServersUnder lists the fuse-overlayfs processes serving a mount point below dir.
func fuseServersUnder(dir string) []int {
	var pids []int
	cmdlines, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, f := range cmdlines {
		b, _ := os.ReadFile(f)
		args := strings.Split(string(b), "\x00")
		if len(args) > 2 && filepath.Base(args[0]) == "fuse-overlayfs" && strings.HasPrefix(args[2], dir+"/") {
			if pid, err := strconv.Atoi(strings.Split(f, "/")[2]); err == nil {
				pids = append(pids, pid)
			}
		}
	}
	return pids
}
