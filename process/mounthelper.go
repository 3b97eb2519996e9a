package process

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"

	"github.com/example/containerd-shim-example-v2/internal/inroot"
	"github.com/example/containerd-shim-example-v2/reaper"
)

// FUSE filesystems are mounted by a helper program, as mount(8) and
// containerd's own mount code do: a type "fuse.<subtype>" by mount.fuse,
// "fuse3.<subtype>" by mount.fuse3, which start the subtype's program
// (fuse-overlayfs for containerd's fuse-overlayfs snapshotter,
// nydus-overlayfs for nydus). The kernel has no filesystem of those names.
var fuseHelpers = []struct{ prefix, binary string }{
	{"fuse.", "mount.fuse"},
	{"fuse3.", "mount.fuse3"},
}

// mountHelperTimeout bounds a helper's run: a FUSE server that never goes
// to the background would otherwise hold the Create for ever.
var mountHelperTimeout = time.Minute

// mountHelper names the helper that mounts fstype, if one does.
func mountHelper(fstype string) (binary, subtype string, ok bool) {
	for _, h := range fuseHelpers {
		if sub, found := strings.CutPrefix(fstype, h.prefix); found && sub != "" {
			return h.binary, sub, true
		}
	}
	return "", "", false
}

// mountWithHelper mounts m on target by running binary with the arguments
// mount(8) gives helpers: source, target, each option as "-o <option>" (as
// containerd passes them, unparsed) and "-t <subtype>". The helper is the
// shim's child, reaped by r; a FUSE server it leaves in the background is
// then the shim's (a subreaper's) too, and reaped when it ends with the
// unmount.
func mountWithHelper(r *reaper.Reaper, binary, subtype string, m Mount, target string) error {
	if r == nil {
		return fmt.Errorf("%s needs a helper program, and nothing reaps it: %w", m.Type, errdefs.ErrNotImplemented)
	}
	args := []string{m.Source, target}
	for _, o := range m.Options {
		args = append(args, "-o", o)
	}
	args = append(args, "-t", subtype)
	// The output goes to a memory file: the reaper's Start takes *os.File
	// stdio only, and the helper's words are the error's.
	fd, err := unix.MemfdCreate("mount-helper-output", unix.MFD_CLOEXEC)
	if err != nil {
		return fmt.Errorf("mount helper %s: output file: %w", binary, err)
	}
	out := os.NewFile(uintptr(fd), "mount-helper-output")
	defer out.Close()
	cmd := exec.Command(binary, args...)
	cmd.Stdout, cmd.Stderr = out, out
	exitc, err := r.Start(cmd)
	if err != nil {
		return fmt.Errorf("mount helper: %w", err)
	}
	var e reaper.Exit
	timedOut := false
	select {
	case e = <-exitc:
	case <-time.After(mountHelperTimeout):
		_ = cmd.Process.Kill()
		e, timedOut = <-exitc, true
	}
	// Reaped by the reaper: the pidfd os/exec keeps for Kill would otherwise
	// stay open until a garbage collection (as oci's runtime calls do).
	_ = cmd.Process.Release()
	if timedOut {
		return fmt.Errorf("mount helper %s %s: no answer in %v", binary, strings.Join(args, " "), mountHelperTimeout)
	}
	if e.Status == 0 {
		return nil
	}
	said, _ := io.ReadAll(io.NewSectionReader(out, 0, 4096))
	return fmt.Errorf("mount helper %s %s: exit status %d: %s", binary, strings.Join(args, " "), e.Status, strings.TrimSpace(string(said)))
}

// mountWithHelperBelow mounts m, a helper's filesystem, at m.Target below
// rootfs. The helper resolves the path it is given itself, where a symlink
// in the image could lead it out of the rootfs; so it mounts on a staging
// directory beside the rootfs instead, and a clone of that mount is moved
// onto the mount point opened inside the rootfs (inroot), as the other
// entries are mounted. The staging mount then goes; the clone keeps the
// filesystem, and its FUSE server, until the rootfs is unmounted. A clone,
// not the mount itself: moving an attached mount fails under a shared
// parent mount (/run on a systemd host), moving a detached one does not.
func mountWithHelperBelow(r *reaper.Reaper, binary, subtype string, m Mount, rootfs string, i int) (err error) {
	point, err := inroot.Open(rootfs, filepath.Clean("/"+m.Target), true)
	if err != nil {
		return fmt.Errorf("mount point: %w", err)
	}
	defer point.Close()
	staging := filepath.Join(filepath.Dir(rootfs), fmt.Sprintf(".helper-mount-%d", i))
	if err := os.Mkdir(staging, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("staging directory: %w", err)
	}
	defer os.Remove(staging)
	if err := mountWithHelper(r, binary, subtype, m, staging); err != nil {
		return err
	}
	defer func() {
		if uerr := unix.Unmount(staging, unix.MNT_DETACH); uerr != nil && err == nil {
			err = fmt.Errorf("unmount the staging mount %s: %w", staging, uerr)
		}
	}()
	fd, err := unix.OpenTree(unix.AT_FDCWD, staging, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC)
	if err != nil {
		return fmt.Errorf("clone the helper's mount: %w", err)
	}
	defer unix.Close(fd)
	if err := unix.MoveMount(fd, "", int(point.File.Fd()), "", unix.MOVE_MOUNT_F_EMPTY_PATH|unix.MOVE_MOUNT_T_EMPTY_PATH); err != nil {
		return fmt.Errorf("move the helper's mount to %s: %w", m.Target, err)
	}
	return nil
}
