package process

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"

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
