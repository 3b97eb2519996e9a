package process

import (
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// A rootfs entry with a Target is mounted below the rootfs, which the
// kernel then finds busy: the unmount takes the mounts below first instead
// of sitting out the busy retries and ending in a lazy detach.
func TestUnmountAllTakesMountsBelowFirst(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounting needs root")
	}
	lazy := 0
	defer func(f func(string) error) { detachLazily = f }(detachLazily)
	detachLazily = func(target string) error {
		lazy++
		return unix.Unmount(target, unix.MNT_DETACH)
	}
	base := t.TempDir()
	rootfs := mkdir(t, filepath.Join(base, "rootfs"))
	t.Cleanup(func() { _ = unix.Unmount(rootfs, unix.MNT_DETACH) })
	err := mountRootfs(rootfs, []Mount{
		{Type: "tmpfs", Source: "tmpfs"},
		{Type: "tmpfs", Source: "tmpfs", Target: "/sub"},
		{Type: "tmpfs", Source: "tmpfs", Target: "/sub/deeper dir"},
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := mountsBelow(rootfs); len(got) != 2 || got[0] != "sub/deeper dir" || got[1] != "sub" {
		t.Fatalf("mounts below the rootfs: %q, want the two targets, deepest first", got)
	}
	if err := unmountAll(rootfs); err != nil {
		t.Fatal(err)
	}
	if lazy != 0 {
		t.Errorf("the rootfs was detached lazily %d times", lazy)
	}
	if got := mountsBelow(base); len(got) != 0 {
		t.Errorf("still mounted: %q", got)
	}
}

// What the mount table named is unmounted only inside the rootfs: when a
// directory on the way has become a symlink to a host directory with a
// mount of the same name, the host's mount stays.
func TestUnmountBeneathStaysInside(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounting needs root")
	}
	base := t.TempDir()
	rootfs := mkdir(t, filepath.Join(base, "rootfs"))
	hostMount := mkdir(t, filepath.Join(base, "host", "sub"))
	if err := unix.Mount("tmpfs", hostMount, "tmpfs", 0, ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = unix.Unmount(hostMount, unix.MNT_DETACH) })
	if err := os.Symlink(filepath.Join(base, "host"), filepath.Join(rootfs, "a")); err != nil {
		t.Fatal(err)
	}
	if err := unmountBeneath(rootfs, "a/sub"); err != nil {
		t.Logf("unmountBeneath: %v", err) // nothing to unmount inside: fine either way
	}
	if !isMount(t, hostMount) {
		t.Error("the host's mount below the symlink's target was unmounted")
	}
	// A last name that is itself a symlink is not followed either.
	if err := os.Symlink(hostMount, filepath.Join(rootfs, "b")); err != nil {
		t.Fatal(err)
	}
	_ = unmountBeneath(rootfs, "b")
	if !isMount(t, hostMount) {
		t.Error("the host's mount, named by a symlink in the rootfs, was unmounted")
	}
}

func TestUnescapeMountPath(t *testing.T) {
	for in, want := range map[string]string{
		`/a/plain`:          "/a/plain",
		`/with\040space`:    "/with space",
		`/tab\011and\134bs`: "/tab\tand\\bs",
		`/trailing\04`:      `/trailing\04`,
		`/not\999octal`:     `/not\999octal`,
	} {
		if got := unescapeMountPath(in); got != want {
			t.Errorf("unescapeMountPath(%q) = %q, want %q", in, got, want)
		}
	}
}
