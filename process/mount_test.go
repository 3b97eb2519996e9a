package process

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"

	"github.com/example/containerd-shim-example-v2/internal/inroot"
	"github.com/example/containerd-shim-example-v2/reaper"
)

// Lowerdirs that do not fit in one page of mount data are made relative to
// their common parent; options that fit are left as they are.
func TestCompactLowerdirs(t *testing.T) {
	short := []string{"index=off", "lowerdir=/s/2/fs:/s/1/fs", "upperdir=/s/3/fs", "workdir=/s/3/work"}
	if got, dir := compactLowerdirs(short); dir != "" || strings.Join(got, ",") != strings.Join(short, ",") {
		t.Errorf("short options changed: %q from %q", got, dir)
	}
	parent := "/var/lib/containerd/io.containerd.snapshotter.v1.overlayfs/snapshots/"
	var dirs []string
	for i := 100; i > 20; i-- {
		dirs = append(dirs, fmt.Sprintf("%s%d/fs", parent, i))
	}
	long := []string{"index=off", "lowerdir=" + strings.Join(dirs, ":"), "upperdir=" + parent + "101/fs", "workdir=" + parent + "101/work"}
	got, dir := compactLowerdirs(long)
	if dir != parent {
		t.Fatalf("mount from %q, want %q", dir, parent)
	}
	if want := "lowerdir=100/fs:99/fs:"; !strings.HasPrefix(got[1], want) || strings.Contains(got[1], parent) {
		t.Errorf("lowerdir %.60q..., want relative paths starting %q", got[1], want)
	}
	if got[0] != long[0] || got[2] != long[2] || got[3] != long[3] || long[1] != "lowerdir="+strings.Join(dirs, ":") {
		t.Errorf("other options changed, or the caller's slice: %q", got)
	}
}

// An overlay of more layers than one page of lowerdirs holds mounts, and
// every layer is seen through it.
func TestMountRootfsManyLayers(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounting needs root")
	}
	base := filepath.Join(t.TempDir(), strings.Repeat("a-long-snapshot-directory-name-", 3))
	lowers, upper, work := makeLayers(t, base, 80)
	rootfs := mkdir(t, filepath.Join(base, "rootfs"))
	lowerdir := "lowerdir=" + strings.Join(lowers, ":")
	if len(lowerdir) <= maxMountData {
		t.Fatalf("the test's lowerdir option is %d bytes: it must not fit in a page", len(lowerdir))
	}
	err := mountRootfs(rootfs, []Mount{{Type: "overlay", Source: "overlay",
		Options: []string{"index=off", lowerdir, "upperdir=" + upper, "workdir=" + work}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := unmountAll(rootfs); err != nil {
			t.Error(err)
		}
	}()
	for _, f := range []string{"layer-1", "layer-40", "layer-80"} {
		if _, err := os.Stat(filepath.Join(rootfs, f)); err != nil {
			t.Errorf("%s not seen through the overlay: %v", f, err)
		}
	}
	if wd, _ := os.Getwd(); strings.HasPrefix(wd, base) {
		t.Errorf("the process's working directory moved to %s", wd)
	}
}

// An overlay and a bind mount with uidmap= and gidmap= (containerd 2.x, a
// pod with hostUsers: false) are seen ID-mapped: a file the image owns as 0
// is owned by the start of the pod's host range; the options are not handed
// to the filesystem, and nothing of the mapping is left in the bundle.
func TestMountRootfsIDMapped(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounting needs root")
	}
	r := reaper.New()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go r.Run(ctx)
	idmap := []string{"uidmap=0:100000:65536", "gidmap=0:200000:65536"}

	bundle := t.TempDir()
	lowers, upper, work := makeLayers(t, filepath.Join(bundle, "snapshots"), 3)
	rootfs := mkdir(t, filepath.Join(bundle, "rootfs"))
	err := mountRootfs(rootfs, []Mount{{Type: "overlay", Source: "overlay", Options: append([]string{"index=off",
		"lowerdir=" + strings.Join(lowers, ":"), "upperdir=" + upper, "workdir=" + work}, idmap...)}}, r)
	if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOSYS) {
		t.Skipf("no ID-mapped overlay layers on this kernel or filesystem: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	owner := func(path string) string {
		var st unix.Stat_t
		if err := unix.Stat(path, &st); err != nil {
			t.Fatal(err)
		}
		return fmt.Sprintf("%d:%d", st.Uid, st.Gid)
	}
	if got := owner(filepath.Join(rootfs, "layer-1")); got != "100000:200000" {
		t.Errorf("a lower layer's file through the overlay is owned by %s, want 100000:200000", got)
	}
	if err := unmountAll(rootfs); err != nil {
		t.Fatal(err)
	}
	if left, _ := filepath.Glob(filepath.Join(bundle, ".idmapped-layers*")); len(left) != 0 {
		t.Errorf("left behind: %v", left)
	}

	// A bind mount (a single-layer snapshot) is mapped in place.
	err = mountRootfs(rootfs, []Mount{{Type: "bind", Source: lowers[2], Options: append([]string{"rbind", "ro"}, idmap...)}}, r)
	if err != nil {
		t.Fatal(err)
	}
	if got := owner(filepath.Join(rootfs, "layer-1")); got != "100000:200000" {
		t.Errorf("a bind-mounted layer's file is owned by %s, want 100000:200000", got)
	}
	if err := unmountAll(rootfs); err != nil {
		t.Fatal(err)
	}

	// A bind at a Target inside the rootfs is mapped there too.
	data := mkdir(t, filepath.Join(bundle, "data"))
	if err := os.WriteFile(filepath.Join(data, "f"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	err = mountRootfs(rootfs, []Mount{
		{Type: "bind", Source: lowers[2], Options: []string{"rbind"}},
		{Type: "bind", Source: data, Target: "d", Options: append([]string{"rbind", "ro"}, idmap...)},
	}, r)
	if err != nil {
		t.Fatal(err)
	}
	if got := owner(filepath.Join(rootfs, "d", "f")); got != "100000:200000" {
		t.Errorf("a file below an ID-mapped Target is owned by %s, want 100000:200000", got)
	}
	if err := os.WriteFile(filepath.Join(rootfs, "d", "g"), nil, 0o644); !errors.Is(err, unix.EROFS) {
		t.Errorf("writing below the read-only ID-mapped Target: %v, want EROFS", err)
	}
	if err := unmountAll(rootfs); err != nil {
		t.Fatal(err)
	}

	// A mapping that does not parse is refused before anything is mounted.
	err = mountRootfs(rootfs, []Mount{{Type: "bind", Source: lowers[2], Options: []string{"rbind", "uidmap=0:1", "gidmap=0:1:1"}}}, r)
	if !errdefs.IsInvalidArgument(err) {
		t.Errorf("a bad uidmap: %v, want InvalidArgument", err)
	}
}

// Entries with a Target mount inside the rootfs even when the image's
// symlinks point out of it (absolutely or through ".."), as containerd's
// own mount code resolves them; a read-only bind there is read-only.
func TestMountRootfsTargetsStayInside(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounting needs root")
	}
	base := t.TempDir()
	image := mkdir(t, filepath.Join(base, "image"))
	outside := mkdir(t, filepath.Join(base, "outside"))
	data := mkdir(t, filepath.Join(base, "data"))
	rootfs := mkdir(t, filepath.Join(base, "rootfs"))
	mkdir(t, filepath.Join(image, "real"))
	for name, target := range map[string]string{"abs": outside, "up": "../../../../..", "rel": "real"} {
		if err := os.Symlink(target, filepath.Join(image, name)); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		// Should the mounts have escaped, they must not outlive the test.
		for _, p := range []string{filepath.Join(outside, "tmp"), filepath.Join(base, "tmp2"), "/tmp2"} {
			_ = unix.Unmount(p, unix.MNT_DETACH)
		}
		_ = unix.Unmount(rootfs, unix.MNT_DETACH) // with what is mounted below it
	})
	err := mountRootfs(rootfs, []Mount{
		{Type: "bind", Source: image, Options: []string{"rbind"}},
		{Type: "tmpfs", Source: "tmpfs", Target: "abs/tmp"},
		{Type: "tmpfs", Source: "tmpfs", Target: "up/tmp2"},
		{Type: "bind", Source: data, Target: "rel/data", Options: []string{"bind", "ro"}},
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, inside := range []string{filepath.Join(rootfs, outside, "tmp"), filepath.Join(rootfs, "tmp2"), filepath.Join(rootfs, "real", "data")} {
		if !isMount(t, inside) {
			t.Errorf("nothing mounted at %s", inside)
		}
	}
	for _, escaped := range []string{filepath.Join(outside, "tmp"), "/tmp2"} {
		if _, err := os.Lstat(escaped); err == nil {
			t.Errorf("%s was made outside the rootfs", escaped)
		}
	}
	if err := os.WriteFile(filepath.Join(rootfs, "real", "data", "x"), nil, 0o644); !errors.Is(err, unix.EROFS) {
		t.Errorf("writing below the read-only bind: %v, want EROFS", err)
	}
}

// What follows a mount at a Target (a read-only remount, an ID mapping)
// acts on that mount even when the Target reached its directory through a
// symlink that passes below it and comes back (vol -> mnt/x/..) and the
// mounted tree has, at that place, a symlink of its own (x -> /): the path
// is not walked a second time through the new content.
func TestMountRootfsTargetActsOnItsMount(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounting needs root")
	}
	base := t.TempDir()
	image := mkdir(t, filepath.Join(base, "image"))
	data := mkdir(t, filepath.Join(base, "data"))
	rootfs := mkdir(t, filepath.Join(base, "rootfs"))
	mkdir(t, filepath.Join(image, "mnt", "x"))
	if err := os.Symlink("mnt/x/..", filepath.Join(image, "vol")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/", filepath.Join(data, "x")); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = unix.Unmount(rootfs, unix.MNT_DETACH) })
	err := mountRootfs(rootfs, []Mount{
		{Type: "bind", Source: image, Options: []string{"rbind"}},
		{Type: "bind", Source: data, Target: "vol", Options: []string{"bind", "ro"}},
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(rootfs, "mnt", "into-the-ro-bind"), nil, 0o644); !errors.Is(err, unix.EROFS) {
		t.Errorf("writing below the read-only bind: %v, want EROFS", err)
	}
	if err := os.WriteFile(filepath.Join(rootfs, "into-the-rootfs"), nil, 0o644); err != nil {
		t.Errorf("the rootfs itself became read-only: %v", err)
	}
}

// isMount reports whether path is a mount of its own, not on its parent's.
func isMount(t *testing.T, path string) bool {
	t.Helper()
	id := func(p string) uint64 {
		f, err := os.OpenFile(p, unix.O_PATH|unix.O_CLOEXEC, 0)
		if err != nil {
			return 0
		}
		defer f.Close()
		n, err := inroot.MountID(f)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	own, parent := id(path), id(filepath.Dir(path))
	return own != 0 && parent != 0 && own != parent
}

// makeLayers makes n snapshot layers under dir (dir/<i>/fs, each with a file
// layer-<i>), listed top first as containerd lists them, and an upper and a
// work directory.
func makeLayers(t *testing.T, dir string, n int) (lowers []string, upper, work string) {
	t.Helper()
	for i := n; i >= 1; i-- {
		d := mkdir(t, filepath.Join(dir, fmt.Sprint(i), "fs"))
		if err := os.WriteFile(filepath.Join(d, fmt.Sprintf("layer-%d", i)), nil, 0o644); err != nil {
			t.Fatal(err)
		}
		lowers = append(lowers, d)
	}
	return lowers, mkdir(t, filepath.Join(dir, "up", "fs")), mkdir(t, filepath.Join(dir, "up", "work"))
}

func mkdir(t *testing.T, dir string) string {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// mountFrom hands its thread back instead of ending it: a thread that
// forked a runtime command (started with a parent-death signal) must outlive
// the command. Every thread the process had before the mounts is still there
// after them.
func TestMountFromKeepsItsThread(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounting needs root")
	}
	dir := t.TempDir()
	before := threadIDs(t)
	for i := 0; i < 8; i++ {
		target := mkdir(t, filepath.Join(dir, fmt.Sprintf("m%d", i)))
		if err := mountFrom(dir, "tmpfs", target, "tmpfs", 0, "size=64k"); err != nil {
			t.Fatal(err)
		}
		defer unix.Unmount(target, unix.MNT_DETACH)
	}
	after := threadIDs(t)
	for tid := range before {
		if !after[tid] {
			t.Errorf("thread %s ended by mountFrom", tid)
		}
	}
	if wd, _ := os.Getwd(); strings.HasPrefix(wd, dir) {
		t.Errorf("the process's working directory moved to %s", wd)
	}
}

func threadIDs(t *testing.T) map[string]bool {
	t.Helper()
	entries, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Fatal(err)
	}
	ids := map[string]bool{}
	for _, e := range entries {
		ids[e.Name()] = true
	}
	return ids
}

// An ID-mapped overlay whose layers are plain directories mounts though
// another snapshot beside them is a mount that cannot be ID-mapped (a FUSE
// layer of the stargz snapshotter, here fuse-overlayfs): mapped with their
// common parent, the kernel refuses the whole tree (containerd 2.x's own
// mount code fails so); each layer is then mapped on its own. Many layers
// with long names still fit the page of mount data.
func TestIDMappedOverlayBesideAMountThatCannotBeMapped(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounting needs root")
	}
	if _, err := exec.LookPath("fuse-overlayfs"); err != nil {
		t.Skip("no fuse-overlayfs")
	}
	r := reaper.New()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go r.Run(ctx)

	bundle := filepath.Join(t.TempDir(), strings.Repeat("a-long-snapshot-directory-name-", 3))
	snapshots := filepath.Join(bundle, "snapshots")
	lowers, upper, work := makeLayers(t, snapshots, 60)
	other := mkdir(t, filepath.Join(snapshots, "999", "fs"))
	if out, err := exec.Command("fuse-overlayfs", "-o", "lowerdir="+mkdir(t, filepath.Join(bundle, "fuse-src")), other).CombinedOutput(); err != nil {
		t.Skipf("fuse-overlayfs: %v %s", err, out)
	}
	defer unix.Unmount(other, unix.MNT_DETACH)

	rootfs := mkdir(t, filepath.Join(bundle, "rootfs"))
	err := mountRootfs(rootfs, []Mount{{Type: "overlay", Source: "overlay", Options: []string{"index=off",
		"lowerdir=" + strings.Join(lowers, ":"), "upperdir=" + upper, "workdir=" + work,
		"uidmap=0:100000:65536", "gidmap=0:100000:65536"}}}, r)
	if err != nil {
		t.Fatalf("ID-mapped overlay beside a FUSE mount: %v", err)
	}
	var st unix.Stat_t
	if err := unix.Stat(filepath.Join(rootfs, "layer-1"), &st); err != nil || st.Uid != 100000 {
		t.Errorf("layer-1's owner seen through the mapping: %d (%v), want 100000", st.Uid, err)
	}
	if err := unmountAll(rootfs); err != nil {
		t.Fatal(err)
	}
	if data, _ := os.ReadFile("/proc/self/mountinfo"); strings.Contains(string(data), bundle+"/rootfs") {
		t.Errorf("mounts left under %s after unmountAll", rootfs)
	}
}
