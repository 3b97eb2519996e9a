package holder

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/example/containerd-shim-example-v2/reaper"
)

// tinyProgram is the tiny holder in a sealed memfd, or nil where there is
// none (another architecture, goHolderOnly) or the host refuses executable
// memfds (the error says why; the caller uses the Go holder then).
func tinyProgram() (*os.File, error) {
	prog := tinyHolder()
	if prog == nil || goHolderOnly {
		return nil, nil
	}
	return programFile(prog)
}

// programFile puts an executable into a sealed memfd: nothing on disk, and
// nobody can change it once written.
//
// MFD_EXEC asks for an executable memfd outright: since Linux 6.3 a host
// with vm.memfd_noexec=1 makes memfds without it non-executable, and the
// exec would fail with EACCES. Older kernels do not know the flag (EINVAL)
// and make every memfd executable.
func programFile(prog []byte) (*os.File, error) {
	flags := unix.MFD_CLOEXEC | unix.MFD_ALLOW_SEALING
	fd, err := unix.MemfdCreate(Action, flags|unix.MFD_EXEC)
	if errors.Is(err, unix.EINVAL) {
		fd, err = unix.MemfdCreate(Action, flags)
	}
	if err != nil {
		return nil, fmt.Errorf("holder program: %w", err)
	}
	f := os.NewFile(uintptr(fd), Action)
	if _, err := f.Write(prog); err != nil {
		f.Close()
		return nil, fmt.Errorf("holder program: %w", err)
	}
	seals := unix.F_SEAL_SEAL | unix.F_SEAL_SHRINK | unix.F_SEAL_GROW | unix.F_SEAL_WRITE
	if _, err := unix.FcntlInt(f.Fd(), unix.F_ADD_SEALS, seals); err != nil {
		f.Close()
		return nil, fmt.Errorf("seal holder program: %w", err)
	}
	return f, nil
}

// startProgram starts base's holder through r: the tiny one from mem, or,
// with mem nil, this binary's hidden action (the running binary itself,
// even if the file was replaced since; its errors go to the shim's log).
// Each attempt is a new Cmd, since os/exec refuses a second Start of one,
// even after a Start that failed. A kernel without CLONE_INTO_CGROUP gets a
// retry without it, and moveAfter tells the caller to move the holder.
func startProgram(r *reaper.Reaper, base *exec.Cmd, mem *os.File, birth *birthCgroup) (cmd *exec.Cmd, exit <-chan reaper.Exit, moveAfter bool, err error) {
	attempt := func(sys syscall.SysProcAttr) *exec.Cmd {
		c := &exec.Cmd{Args: base.Args, Env: base.Env, Dir: base.Dir, SysProcAttr: &sys,
			ExtraFiles: append([]*os.File(nil), base.ExtraFiles...)}
		if mem != nil {
			c.ExtraFiles = append(c.ExtraFiles, mem)
			c.Path = fmt.Sprintf("/proc/self/fd/%d", programFD)
		} else {
			c.Path = "/proc/self/exe"
			c.Stderr = os.Stderr
		}
		return c
	}
	sys := *base.SysProcAttr
	birth.apply(&sys)
	cmd = attempt(sys)
	exit, err = r.Start(cmd)
	if err != nil && birth.unsupported(err) {
		birth.withoutCgroup(&sys)
		cmd = attempt(sys)
		exit, err = r.Start(cmd)
		moveAfter = true
	}
	return cmd, exit, moveAfter, err
}

// execRefused reports whether a holder's start failed at the exec of its
// program (not at the fork), so another program may still start.
func execRefused(err error) bool {
	return errors.Is(err, unix.EACCES) || errors.Is(err, unix.EPERM) || errors.Is(err, unix.ENOEXEC)
}
