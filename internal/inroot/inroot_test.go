package inroot

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// sameFile reports whether f is the directory at path.
func sameFile(t *testing.T, f *os.File, path string) bool {
	t.Helper()
	var a, b unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &a); err != nil {
		t.Fatal(err)
	}
	if err := unix.Stat(path, &b); err != nil {
		return false
	}
	return a.Dev == b.Dev && a.Ino == b.Ino
}

// Symlinks and ".." that point out of the root, absolutely or relatively,
// are resolved inside it; directories a walk makes are made inside it too.
func TestOpenDirStaysInRoot(t *testing.T) {
	base := t.TempDir()
	root := filepath.Join(base, "root")
	outside := filepath.Join(base, "outside")
	for _, d := range []string{root, outside, filepath.Join(root, "real")} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	links := map[string]string{
		"abs":      outside,         // absolute, to a host directory that exists
		"up":       "../../../..",   // relative, above the root
		"slash":    "/",             // the root itself
		"relreal":  "real",          // an ordinary relative link
		"dangling": "/made/by/walk", // a link to nothing yet
	}
	for name, target := range links {
		if err := os.Symlink(target, filepath.Join(root, name)); err != nil {
			t.Fatal(err)
		}
	}
	cases := []struct {
		path string
		want string // below root
	}{
		{"abs/sub", filepath.Join(outside, "sub")},
		{"up/sub2", "sub2"},
		{"../../sub3", "sub3"},
		{"slash/real", "real"},
		{"relreal/../real/x", "real/x"},
		{"/dangling/y", "made/by/walk/y"},
		{"", ""},
	}
	for _, c := range cases {
		f, err := OpenDir(root, c.path, true)
		if err != nil {
			t.Errorf("%q: %v", c.path, err)
			continue
		}
		if !sameFile(t, f, filepath.Join(root, c.want)) {
			t.Errorf("%q opened something other than %s below the root", c.path, c.want)
		}
		f.Close()
	}
	if entries, _ := os.ReadDir(outside); len(entries) != 0 {
		t.Errorf("the walk made %v outside the root", entries)
	}
	for _, gone := range []string{filepath.Join(base, "sub2"), filepath.Join(base, "sub3"), "/made"} {
		if _, err := os.Lstat(gone); err == nil {
			t.Errorf("%s exists outside the root", gone)
		}
	}
}

// Without create a missing directory is an error wrapping ENOENT; a file on
// the way is ENOTDIR; a symlink loop is ELOOP; nothing is made.
func TestOpenDirErrors(t *testing.T) {
	root := t.TempDir()
	if err := os.WriteFile(filepath.Join(root, "file"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for name, target := range map[string]string{"a": "b", "b": "a"} {
		if err := os.Symlink(target, filepath.Join(root, name)); err != nil {
			t.Fatal(err)
		}
	}
	cases := []struct {
		path   string
		create bool
		want   error
	}{
		{"missing/x", false, unix.ENOENT},
		{"file", true, unix.ENOTDIR},
		{"file/x", true, unix.ENOTDIR},
		{"a/x", true, unix.ELOOP},
	}
	for _, c := range cases {
		f, err := OpenDir(root, c.path, c.create)
		if err == nil {
			f.Close()
			t.Errorf("%q: opened, want %v", c.path, c.want)
			continue
		}
		if !errors.Is(err, c.want) {
			t.Errorf("%q: %v, want %v", c.path, err, c.want)
		}
	}
	if _, err := os.Lstat(filepath.Join(root, "missing")); err == nil {
		t.Error("a walk without create made a directory")
	}
}

// The mount ID read from fdinfo (kernels before 5.8) is statx's.
func TestMountIDFromFdinfoIsStatx(t *testing.T) {
	for _, p := range []string{"/", "/proc", t.TempDir()} {
		f, err := os.OpenFile(p, unix.O_PATH|unix.O_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		var st unix.Statx_t
		if err := unix.Statx(int(f.Fd()), "", unix.AT_EMPTY_PATH, unix.STATX_MNT_ID, &st); err != nil || st.Mask&unix.STATX_MNT_ID == 0 {
			f.Close()
			t.Skipf("no STATX_MNT_ID on this kernel (%v)", err)
		}
		got, err := mountIDFromFdinfo(f)
		f.Close()
		if err != nil || got != st.Mnt_id {
			t.Errorf("%s: fdinfo says %d (%v), statx %d", p, got, err, st.Mnt_id)
		}
	}
}
