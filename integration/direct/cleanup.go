package direct

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// runcTimeout bounds one runc call made while cleaning up.
const runcTimeout = 10 * time.Second

// runcDelete force-deletes a container from runc's state under root (kills
// what is left of it, removes its cgroup and state). A container runc does
// not know is not an error: the shim normally deleted it already.
func runcDelete(root, id string) error {
	if _, err := os.Stat(filepath.Join(root, id)); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), runcTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, RuncPath(), "--root", root, "delete", "--force", id).CombinedOutput()
	if err != nil && !strings.Contains(string(out), "does not exist") {
		return fmt.Errorf("runc --root %s delete --force %s: %w: %s", root, id, err, trimOutput(out))
	}
	return nil
}

// mountInfo is one line of /proc/self/mountinfo: where, and what type.
type mountInfo struct {
	point  string
	fstype string
}

func mounts() ([]mountInfo, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var ms []mountInfo
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		// id parent major:minor root point options [optional...] - fstype source superoptions
		fields := strings.Fields(sc.Text())
		if len(fields) < 7 {
			continue
		}
		m := mountInfo{point: unescapeMount(fields[4])}
		for i := 6; i+1 < len(fields); i++ {
			if fields[i] == "-" {
				m.fstype = fields[i+1]
				break
			}
		}
		ms = append(ms, m)
	}
	return ms, sc.Err()
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space...).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			var c byte
			if _, err := fmt.Sscanf(s[i+1:i+4], "%03o", &c); err == nil {
				b.WriteByte(c)
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// MountsUnder lists the mount points at or below dir, deepest first.
func MountsUnder(dir string) ([]string, error) {
	ms, err := mounts()
	if err != nil {
		return nil, err
	}
	var under []string
	for _, m := range ms {
		if m.point == dir || strings.HasPrefix(m.point, dir+"/") {
			under = append(under, m.point)
		}
	}
	sort.Slice(under, func(i, j int) bool { return len(under[i]) > len(under[j]) })
	return under, nil
}

// unmountUnder detaches whatever is mounted at or below dir (a rootfs the
// shim mounted into a bundle and never unmounted).
func unmountUnder(dir string) error {
	points, err := MountsUnder(dir)
	if err != nil {
		return err
	}
	var errs []error
	for _, p := range points {
		if err := unix.Unmount(p, unix.MNT_DETACH); err != nil && err != unix.EINVAL && err != unix.ENOENT {
			errs = append(errs, fmt.Errorf("unmount %s: %w", p, err))
		}
	}
	return errors.Join(errs...)
}

// cgroupRoots lists the mount points of every cgroup hierarchy (v1
// controllers, named hierarchies, and the v2 tree: hybrid hosts have all).
func cgroupRoots() ([]string, error) {
	ms, err := mounts()
	if err != nil {
		return nil, err
	}
	var roots []string
	for _, m := range ms {
		if m.fstype == "cgroup" || m.fstype == "cgroup2" {
			roots = append(roots, m.point)
		}
	}
	return roots, nil
}

// CgroupDirs lists the directories of cgroup path (like "/exd-x/c1") that
// exist in any hierarchy.
func CgroupDirs(path string) ([]string, error) {
	roots, err := cgroupRoots()
	if err != nil {
		return nil, err
	}
	var dirs []string
	for _, r := range roots {
		d := filepath.Join(r, path)
		if _, err := os.Stat(d); err == nil {
			dirs = append(dirs, d)
		}
	}
	return dirs, nil
}

// removeCgroup removes cgroup path and everything below it in every
// hierarchy, deepest first (a cgroup directory goes with rmdir, only once
// empty of processes and children).
func removeCgroup(path string) error {
	if path == "" || path == "/" || strings.Contains(path, "..") {
		return fmt.Errorf("refusing to remove cgroup %q", path)
	}
	dirs, err := CgroupDirs(path)
	if err != nil {
		return err
	}
	var errs []error
	for _, top := range dirs {
		var all []string
		_ = filepath.WalkDir(top, func(p string, e os.DirEntry, err error) error {
			if err == nil && e.IsDir() {
				all = append(all, p)
			}
			return nil
		})
		for i := len(all) - 1; i >= 0; i-- {
			if err := os.Remove(all[i]); err != nil && !errors.Is(err, os.ErrNotExist) {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}
