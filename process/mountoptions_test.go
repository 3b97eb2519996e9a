package process

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// filesystemImage makes an ext4 image holding a file "hello" (what
// containerd's blockfile snapshotter keeps per snapshot), or skips.
func filesystemImage(t *testing.T) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("loop devices need root")
	}
	if _, err := os.Stat("/dev/loop-control"); err != nil {
		t.Skipf("no loop devices: %v", err)
	}
	mkfs, err := exec.LookPath("mkfs.ext4")
	if err != nil {
		t.Skipf("no mkfs.ext4 (e2fsprogs): %v", err)
	}
	dir := t.TempDir()
	content := mkdir(t, filepath.Join(dir, "content"))
	if err := os.WriteFile(filepath.Join(content, "hello"), []byte("from the image\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	img := filepath.Join(dir, "snapshot.img")
	if out, err := exec.Command(mkfs, "-q", "-F", "-d", content, img, "8M").CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v: %s", err, out)
	}
	return img
}

// loopDevicesOf lists the loop devices the kernel has attached to img.
func loopDevicesOf(t *testing.T, img string) []string {
	t.Helper()
	var devs []string
	files, _ := filepath.Glob("/sys/block/loop*/loop/backing_file")
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err == nil && strings.TrimSpace(string(b)) == img {
			devs = append(devs, strings.Split(f, "/")[3])
		}
	}
	return devs
}

// waitDetached waits for the kernel to let img's loop device go: it
// detaches an autoclear device after its last user, not always at once.
func waitDetached(t *testing.T, img string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		devs := loopDevicesOf(t, img)
		if len(devs) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s still attached to %v", img, devs)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A rootfs entry with the option "loop" (containerd's blockfile
// snapshotter: {Type: ext4, Source: <image file>, Options: [loop rw]}) is
// mounted from a loop device, as the stock shim does; before, the word went
// to the filesystem, which refused a regular file as its device. Unmounting
// the rootfs frees the device.
func TestMountRootfsFromALoopDevice(t *testing.T) {
	img := filesystemImage(t)
	rootfs := mkdir(t, filepath.Join(t.TempDir(), "rootfs"))
	if err := mountRootfs(rootfs, []Mount{{Type: "ext4", Source: img, Options: []string{"loop", "rw"}}}, nil); err != nil {
		t.Fatal(err)
	}
	mounted := true
	defer func() {
		if mounted {
			_ = unmountAll(rootfs)
		}
	}()
	if b, err := os.ReadFile(filepath.Join(rootfs, "hello")); err != nil || string(b) != "from the image\n" {
		t.Fatalf("the image's file read %q, %v", b, err)
	}
	if err := os.WriteFile(filepath.Join(rootfs, "written"), []byte("x"), 0o644); err != nil {
		t.Errorf("a rw image is not writable: %v", err)
	}
	if devs := loopDevicesOf(t, img); len(devs) != 1 {
		t.Errorf("the image is attached to %v, want one loop device", devs)
	}
	if err := unmountAll(rootfs); err != nil {
		t.Fatal(err)
	}
	mounted = false
	waitDetached(t, img)
}

// "ro" with "loop" attaches the device read-only too, so that not even the
// filesystem's journal replay writes the image.
func TestMountRootfsFromALoopDeviceReadOnly(t *testing.T) {
	img := filesystemImage(t)
	before, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	rootfs := mkdir(t, filepath.Join(t.TempDir(), "rootfs"))
	if err := mountRootfs(rootfs, []Mount{{Type: "ext4", Source: img, Options: []string{"ro", "loop"}}}, nil); err != nil {
		t.Fatal(err)
	}
	devs := loopDevicesOf(t, img)
	ro, _ := os.ReadFile("/sys/block/" + strings.Join(devs, "") + "/ro")
	err = os.WriteFile(filepath.Join(rootfs, "written"), []byte("x"), 0o644)
	if uerr := unmountAll(rootfs); uerr != nil {
		t.Fatal(uerr)
	}
	waitDetached(t, img)
	if !errors.Is(err, unix.EROFS) {
		t.Errorf("a write to the read-only image: %v, want EROFS", err)
	}
	if len(devs) != 1 || strings.TrimSpace(string(ro)) != "1" {
		t.Errorf("loop devices %v, read-only %q; want one, read-only", devs, ro)
	}
	if after, err := os.ReadFile(img); err != nil || string(after) != string(before) {
		t.Errorf("the image changed under a read-only mount (%v)", err)
	}
}

// A mount that fails after the device was attached leaves no device behind.
func TestMountRootfsLoopDeviceFreedOnFailure(t *testing.T) {
	img := filesystemImage(t)
	rootfs := mkdir(t, filepath.Join(t.TempDir(), "rootfs"))
	err := mountRootfs(rootfs, []Mount{{Type: "xfs", Source: img, Options: []string{"loop"}}}, nil)
	if err == nil {
		_ = unmountAll(rootfs)
		t.Fatal("an ext4 image mounted as xfs")
	}
	waitDetached(t, img)
}

// Propagation words (fstab's and moby's; containerd's mount code hands them
// to the filesystem) set the mount's propagation in a call of their own, on
// the rootfs and on an entry below it; before, they went to the filesystem,
// which refused them.
func TestMountRootfsPropagation(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounting needs root")
	}
	rootfs := mkdir(t, filepath.Join(t.TempDir(), "rootfs"))
	err := mountRootfs(rootfs, []Mount{
		{Type: "tmpfs", Source: "tmpfs", Options: []string{"size=1m", "shared", "unbindable"}},
		{Type: "tmpfs", Source: "tmpfs", Target: "/data", Options: []string{"size=1m", "shared"}},
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := unmountAll(rootfs); err != nil {
			t.Error(err)
		}
	}()
	fields := map[string]string{}
	b, _ := os.ReadFile("/proc/self/mountinfo")
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 7 && (f[4] == rootfs || f[4] == rootfs+"/data") {
			sep := slices.Index(f, "-")
			fields[f[4]] = strings.Join(f[6:sep], " ") // the optional fields
		}
	}
	if got := fields[rootfs]; got != "unbindable" {
		t.Errorf("rootfs propagation %q, want unbindable (the last word)", got)
	}
	if got := fields[rootfs+"/data"]; !strings.HasPrefix(got, "shared:") {
		t.Errorf("/data propagation %q, want shared", got)
	}
}
