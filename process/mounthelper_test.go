package process

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"

	"github.com/example/containerd-shim-example-v2/reaper"
)

func TestMountHelperNames(t *testing.T) {
	for fstype, want := range map[string]string{
		"fuse.nydus-overlayfs":  "mount.fuse nydus-overlayfs",
		"fuse3.fuse-overlayfs":  "mount.fuse3 fuse-overlayfs",
		"fuse.":                 "",
		"fuseblk":               "",
		"overlay":               "",
		"fuse3fuse-overlayfs":   "",
		"fuse3.fuse.overlay.fs": "mount.fuse3 fuse.overlay.fs",
	} {
		binary, sub, ok := mountHelper(fstype)
		got := ""
		if ok {
			got = binary + " " + sub
		}
		if got != want {
			t.Errorf("%q: helper %q, want %q", fstype, got, want)
		}
	}
}

// runningReaper is a reaper running until the test ends, in a test process
// that is a subreaper (as the daemon is), or skips.
func runningReaper(t *testing.T) *reaper.Reaper {
	t.Helper()
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		t.Skipf("cannot become a subreaper: %v", err)
	}
	r := reaper.New()
	ctx, stop := context.WithCancel(context.Background())
	t.Cleanup(stop)
	go r.Run(ctx)
	return r
}

// needFUSEOverlay skips unless the test can mount fuse-overlayfs through
// mount.fuse3 (Debian's fuse3 and fuse-overlayfs).
func needFUSEOverlay(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("mounting needs root")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skipf("no FUSE: %v", err)
	}
	for _, bin := range []string{"mount.fuse3", "fuse-overlayfs"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Skipf("no %s: %v", bin, err)
		}
	}
}

// serverOf finds the FUSE server serving mountpoint: the process whose
// command line names it.
func serverOf(mountpoint string) int {
	dirs, _ := os.ReadDir("/proc")
	for _, d := range dirs {
		pid, err := strconv.Atoi(d.Name())
		if err != nil {
			continue
		}
		b, _ := os.ReadFile(filepath.Join("/proc", d.Name(), "cmdline"))
		args := strings.Split(string(b), "\x00")
		if len(args) > 2 && filepath.Base(args[0]) == "fuse-overlayfs" && args[2] == mountpoint {
			return pid
		}
	}
	return 0
}

// A rootfs entry of type "fuse3.fuse-overlayfs" (containerd's
// fuse-overlayfs snapshotter) is mounted by mount.fuse3, as containerd's own
// mount code and the stock shim do; before, the shim handed the type to
// mount(2), which knows no such filesystem. The FUSE server the helper
// leaves behind is the shim's child, and is reaped when the unmount ends it.
func TestMountRootfsWithAFUSEHelper(t *testing.T) {
	needFUSEOverlay(t)
	r := runningReaper(t)
	base := t.TempDir()
	lower1, lower2 := mkdir(t, filepath.Join(base, "l1")), mkdir(t, filepath.Join(base, "l2"))
	upper, work := mkdir(t, filepath.Join(base, "u")), mkdir(t, filepath.Join(base, "w"))
	rootfs := mkdir(t, filepath.Join(base, "rootfs"))
	for dir, name := range map[string]string{lower1: "from-l1", lower2: "from-l2"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(name), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	err := mountRootfs(rootfs, []Mount{{Type: "fuse3.fuse-overlayfs", Source: "overlay",
		Options: []string{"lowerdir=" + lower2 + ":" + lower1, "upperdir=" + upper, "workdir=" + work}}}, r)
	if err != nil {
		t.Fatal(err)
	}
	mounted := true
	defer func() {
		if mounted {
			_ = unmountAll(rootfs)
		}
	}()
	for _, name := range []string{"from-l1", "from-l2"} {
		if b, err := os.ReadFile(filepath.Join(rootfs, name)); err != nil || string(b) != name {
			t.Errorf("%s through the mount: %q, %v", name, b, err)
		}
	}
	if err := os.WriteFile(filepath.Join(rootfs, "written"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(upper, "written")); err != nil {
		t.Errorf("a write through the mount is not in the upper layer: %v", err)
	}
	server := serverOf(rootfs)
	if server == 0 {
		t.Fatal("no fuse-overlayfs server for the rootfs")
	}
	if st, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(server), "stat")); err == nil {
		f := strings.Fields(string(st[strings.LastIndexByte(string(st), ')')+1:]))
		if len(f) > 1 && f[1] != strconv.Itoa(os.Getpid()) {
			t.Errorf("the FUSE server's parent is %s, want the shim (%d)", f[1], os.Getpid())
		}
	}
	if err := unmountAll(rootfs); err != nil {
		t.Fatal(err)
	}
	mounted = false
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, err := os.Stat(filepath.Join("/proc", strconv.Itoa(server))); os.IsNotExist(err) {
			break // gone and reaped: a zombie would still be listed
		}
		if time.Now().After(deadline) {
			t.Fatalf("the FUSE server %d is still there after the unmount", server)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A helper that fails is an error with its words, and nothing is left
// mounted; without a reaper, a helper's filesystem is refused as not
// implemented.
func TestMountHelperRefusals(t *testing.T) {
	needFUSEOverlay(t)
	r := runningReaper(t)
	rootfs := mkdir(t, filepath.Join(t.TempDir(), "rootfs"))
	err := mountRootfs(rootfs, []Mount{{Type: "fuse3.no-such-filesystem", Source: "x", Options: []string{"ro"}}}, r)
	if err == nil {
		_ = unmountAll(rootfs)
		t.Fatal("a filesystem without a program mounted")
	}
	if !strings.Contains(err.Error(), "mount helper mount.fuse3") || !strings.Contains(err.Error(), "exit status") {
		t.Errorf("error %q: want the helper and its status named", err)
	}
	if isMount(t, rootfs) {
		t.Error("a mount left on the rootfs")
	}
	err = mountRootfs(rootfs, []Mount{{Type: "fuse3.fuse-overlayfs", Source: "overlay"}}, nil)
	if !errdefs.IsNotImplemented(err) {
		t.Errorf("without a reaper: %v, want NotImplemented", err)
	}
}

// A helper's filesystem below the rootfs (a Target) is mounted where the
// Target leads inside the rootfs, through a symlink of the image too, never
// where the path would lead on the host; the staging mount beside the
// rootfs is gone once it is in place, and the FUSE server ends with the
// rootfs's unmount.
func TestMountRootfsWithAFUSEHelperBelowTheRootfs(t *testing.T) {
	needFUSEOverlay(t)
	fuseHelperBelowTheRootfs(t, t.TempDir())
}

// inMountNSEnv marks the run of a test that re-executed itself in a mount
// namespace of its own (see inOwnMountNS).
const inMountNSEnv = "SHIM_TEST_IN_OWN_MOUNT_NS"

// The same under a shared mount, as the bundle is on a systemd host (/run
// is shared there; this machine's mounts are all private). The staging
// mount's parent is then shared, and the kernel refuses to move an attached
// mount out from under a shared parent: hence the clone. The test runs
// again, alone, in a private mount namespace of its own (unshare -m), where
// it makes a tmpfs shared, so the host's mounts are never changed.
func TestMountRootfsWithAFUSEHelperUnderASharedMount(t *testing.T) {
	needFUSEOverlay(t)
	if !inOwnMountNS(t) {
		return
	}
	base := t.TempDir()
	if err := unix.Mount("tmpfs", base, "tmpfs", 0, "size=16m"); err != nil {
		t.Fatalf("tmpfs for the bundle: %v", err)
	}
	defer unix.Unmount(base, unix.MNT_DETACH)
	if err := unix.Mount("", base, "", unix.MS_SHARED, ""); err != nil {
		t.Fatalf("make the bundle's mount shared: %v", err)
	}
	fuseHelperBelowTheRootfs(t, base)
}

// inOwnMountNS reports whether the test runs in its own mount namespace.
// When not, it runs the test again alone in one (unshare -m, every mount
// private there) and reports its result as this test's.
func inOwnMountNS(t *testing.T) bool {
	t.Helper()
	if os.Getenv(inMountNSEnv) != "" {
		return true
	}
	if _, err := exec.LookPath("unshare"); err != nil {
		t.Skipf("no unshare: %v", err)
	}
	cmd := exec.Command("unshare", "-m", "--propagation", "private", os.Args[0],
		"-test.run", "^"+t.Name()+"$", "-test.v", "-test.count", "1")
	cmd.Env = append(os.Environ(), inMountNSEnv+"=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s in its own mount namespace: %v\n%s", t.Name(), err, out)
	}
	if !strings.Contains(string(out), "--- PASS: "+t.Name()) {
		t.Fatalf("%s in its own mount namespace did not pass:\n%s", t.Name(), out)
	}
	return false
}

// fuseHelperBelowTheRootfs mounts a fuse-overlayfs layer at /link (a
// symlink of the image to /data) of a rootfs made under base, and checks
// where it landed, that no staging directory is left, and that the FUSE
// server ends with the rootfs's unmount.
func fuseHelperBelowTheRootfs(t *testing.T, base string) {
	t.Helper()
	r := runningReaper(t)
	lower, upper, work := mkdir(t, filepath.Join(base, "l")), mkdir(t, filepath.Join(base, "u")), mkdir(t, filepath.Join(base, "w"))
	if err := os.WriteFile(filepath.Join(lower, "from-lower"), []byte("layer"), 0o644); err != nil {
		t.Fatal(err)
	}
	image := mkdir(t, filepath.Join(base, "image"))
	mkdir(t, filepath.Join(image, "data"))
	// An absolute symlink of the image: inside the rootfs it leads to /data.
	if err := os.Symlink("/data", filepath.Join(image, "link")); err != nil {
		t.Fatal(err)
	}
	rootfs := mkdir(t, filepath.Join(base, "bundle", "rootfs"))
	err := mountRootfs(rootfs, []Mount{
		{Type: "bind", Source: image, Options: []string{"rbind", "rw"}},
		{Type: "fuse3.fuse-overlayfs", Source: "overlay", Target: "/link",
			Options: []string{"lowerdir=" + lower, "upperdir=" + upper, "workdir=" + work}},
	}, r)
	if err != nil {
		t.Fatal(err)
	}
	mounted := true
	defer func() {
		if mounted {
			_ = unmountAll(rootfs)
		}
	}()
	data := filepath.Join(rootfs, "data")
	if b, err := os.ReadFile(filepath.Join(data, "from-lower")); err != nil || string(b) != "layer" {
		t.Fatalf("the layer through the mount at /data: %q, %v", b, err)
	}
	if err := os.WriteFile(filepath.Join(data, "written"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(upper, "written")); err != nil {
		t.Errorf("a write through the mount is not in the upper layer: %v", err)
	}
	staging, _ := filepath.Glob(filepath.Join(base, "bundle", ".helper-mount-*"))
	if len(staging) != 0 {
		t.Errorf("staging directories left beside the rootfs: %v", staging)
	}
	server := serverOf(filepath.Join(base, "bundle", ".helper-mount-1")) // what the helper was given
	if server == 0 {
		t.Fatal("no fuse-overlayfs server for the mount")
	}
	if err := unmountAll(rootfs); err != nil {
		t.Fatal(err)
	}
	mounted = false
	// Looked at once the layer is unmounted: under a shared mount the rootfs
	// (a bind of the image) is a peer of the image's own mount, and the
	// layer shows there too while it is mounted.
	if _, err := os.Stat(filepath.Join(image, "data", "written")); err == nil {
		t.Error("the write landed in the image's directory under the mount")
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, err := os.Stat(filepath.Join("/proc", strconv.Itoa(server))); os.IsNotExist(err) {
			break // gone and reaped: a zombie would still be listed
		}
		if time.Now().After(deadline) {
			t.Fatalf("the FUSE server %d is still there after the unmount", server)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
