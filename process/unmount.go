package process

import (
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/example/containerd-shim-example-v2/bundle"
	"github.com/example/containerd-shim-example-v2/internal/inroot"
)

// unmountBusyRetries and unmountBusyDelay bound how long a busy rootfs is
// retried before it is detached lazily: a process that just exited can hold
// it for a moment.
const (
	unmountBusyRetries = 50
	unmountBusyDelay   = 20 * time.Millisecond
)

// detachLazily is the last resort for a rootfs still busy after the retries
// (a variable for tests, which count its uses).
var detachLazily = func(target string) error {
	return unix.Unmount(target, unix.MNT_DETACH|unix.UMOUNT_NOFOLLOW)
}

// unmountAll unmounts everything stacked on target, and first, when the
// kernel finds target busy, whatever is mounted below it (a rootfs entry
// with a Target), deepest first.
func unmountAll(target string) error {
	for busy, below := 0, false; ; {
		err := unmountStacked(target)
		switch {
		case err == nil:
			return nil
		case errors.Is(err, unix.EBUSY) && !below:
			// Mounts below target hold it (or a process does, which the
			// retries wait out): unmount those, then try again at once.
			below = true
			unmountBelow(target)
		case errors.Is(err, unix.EBUSY) && busy < unmountBusyRetries:
			busy++
			time.Sleep(unmountBusyDelay)
		case errors.Is(err, unix.EBUSY):
			return detachLazily(target)
		default:
			return fmt.Errorf("unmount %s: %w", target, err)
		}
	}
}

// unmountStacked unmounts what is stacked at path (a name resolved from the
// working directory, or an absolute path), the last component not followed,
// until nothing is (EINVAL, ENOENT). Other errors, EBUSY among them, are
// returned.
func unmountStacked(path string) error {
	for {
		err := unix.Unmount(path, unix.UMOUNT_NOFOLLOW)
		switch {
		case err == nil:
			continue
		case errors.Is(err, unix.EINVAL), errors.Is(err, unix.ENOENT):
			return nil
		default:
			return err
		}
	}
}

// unmountBelow unmounts what is mounted strictly below dir, deepest first; a
// busy one is left to the caller's lazy detach. Only a busy unmount calls
// it, so a delete of a rootfs without mounts below it does not read the
// mount table, which is long on a busy node.
func unmountBelow(dir string) {
	for _, rel := range mountsBelow(dir) {
		_ = unmountBeneath(dir, rel)
	}
}

// unmountBeneath unmounts everything stacked at rel below dir. The table
// named the path, but a container process still alive may have changed the
// directories on the way since (a symlink where a directory was): the
// parent is resolved inside dir (inroot) and the last name is never
// followed, so what is unmounted is at worst another mount inside the
// rootfs, never one of the host's. umount(2) takes no directory descriptor:
// the name is resolved from the parent as the working directory.
func unmountBeneath(dir, rel string) error {
	parentPath, name := path.Split(rel)
	if name == "" || name == "." || name == ".." {
		return fmt.Errorf("mount point %q below %s: not a name", rel, dir)
	}
	parent, err := inroot.OpenDir(dir, parentPath, false)
	if err != nil {
		return err
	}
	defer parent.Close()
	enter := func() error { return unix.Fchdir(int(parent.Fd())) }
	return inWorkingDir(enter, func() error {
		if err := unmountStacked(name); err != nil {
			return fmt.Errorf("unmount %s below %s: %w", rel, dir, err)
		}
		return nil
	})
}

// mountsBelow lists the mount points under dir from /proc/self/mountinfo,
// relative to dir, deepest first (a longer path is never a parent of a
// shorter one).
func mountsBelow(dir string) []string {
	if real, err := filepath.EvalSymlinks(dir); err == nil {
		dir = real // the table holds resolved paths
	}
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	prefix := filepath.Clean(dir) + "/"
	var below []string
	for _, line := range strings.Split(string(data), "\n") {
		// id parent major:minor root mount-point options ...
		fields := strings.Fields(line)
		if len(fields) < 5 {
			continue
		}
		if p := unescapeMountPath(fields[4]); strings.HasPrefix(p, prefix) {
			below = append(below, strings.TrimPrefix(p, prefix))
		}
	}
	sort.Slice(below, func(i, j int) bool { return len(below[i]) > len(below[j]) })
	return below
}

// unescapeMountPath undoes the table's octal escapes (\040 for a space,
// \011, \012, \134).
func unescapeMountPath(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// UnmountRootfs unmounts the bundle's rootfs; used by cleanup paths that have
// no Container (the shim's delete command).
func UnmountRootfs(dir string) error { return unmountAll(filepath.Join(dir, bundle.RootfsDir)) }
