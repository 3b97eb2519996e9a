package handover

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// FDs are the files the successor inherits. Go opens every file
// close-on-exec; Keep clears that flag on one file and remembers it, so it is
// open, at the same number, in the binary the daemon executes next.
//
// Not safe for concurrent use: one upgrade builds one FDs.
type FDs struct {
	files []*os.File // held so that no finalizer closes them before execve
}

// Keep marks f to survive execve and returns its descriptor number; f is
// the upgrade's from now on.
func (d *FDs) Keep(f *os.File) (int, error) {
	// Not f.Fd(): that would put the open file description in blocking
	// mode, for every duplicate of it too, the shim's own included.
	rc, err := f.SyscallConn()
	if err != nil {
		return -1, fmt.Errorf("handover: %s: %w", f.Name(), err)
	}
	fd := -1
	var ferr error
	if err := rc.Control(func(u uintptr) {
		fd = int(u)
		_, ferr = unix.FcntlInt(u, unix.F_SETFD, 0)
	}); err != nil {
		return -1, fmt.Errorf("handover: %s: %w", f.Name(), err)
	}
	if ferr != nil {
		return -1, fmt.Errorf("handover: keep fd %d (%s) open across exec: %w", fd, f.Name(), ferr)
	}
	d.files = append(d.files, f)
	return fd, nil
}

// KeepDup keeps a duplicate of f, leaving f itself as it is (still owned,
// and still in non-blocking mode, for the caller).
func (d *FDs) KeepDup(f *os.File) (int, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return -1, fmt.Errorf("handover: %s: %w", f.Name(), err)
	}
	var n int
	var kerr error
	if err := rc.Control(func(fd uintptr) { n, kerr = d.KeepRaw(int(fd), f.Name()) }); err != nil {
		return -1, fmt.Errorf("handover: %s: %w", f.Name(), err)
	}
	return n, kerr
}

// Drop closes the kept descriptor fd: a successor that does not know it (an
// older build, which drops the field naming it) must not inherit it open,
// nor pass it on to every child it starts.
func (d *FDs) Drop(fd int) {
	for i, f := range d.files {
		rc, err := f.SyscallConn() // not f.Fd(), as in Keep
		if err != nil {
			continue
		}
		n := -1
		_ = rc.Control(func(u uintptr) { n = int(u) })
		if n == fd {
			f.Close()
			d.files = append(d.files[:i], d.files[i+1:]...)
			return
		}
	}
}

// Len is how many files are kept.
func (d *FDs) Len() int { return len(d.files) }

// Release closes every kept file: the upgrade did not happen, and the
// duplicates it made must not leak into a later child.
func (d *FDs) Release() {
	for _, f := range d.files {
		f.Close()
	}
	d.files = nil
}

// Adopt takes a descriptor the predecessor kept: it is made close-on-exec
// again (it must not leak into the runtime's children) and wrapped in a file.
// A pollable file is put in non-blocking mode first, which has os.NewFile
// register it with Go's poller (deadlines, no thread blocked); a file the
// shim only holds stays in blocking mode, out of the poller (see io.openIdle).
func Adopt(fd int, name string, pollable bool) (*os.File, error) {
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFD, unix.FD_CLOEXEC); err != nil {
		return nil, fmt.Errorf("handover: adopt fd %d (%s): %w", fd, name, err)
	}
	if err := unix.SetNonblock(fd, pollable); err != nil {
		return nil, fmt.Errorf("handover: adopt fd %d (%s): %w", fd, name, err)
	}
	return os.NewFile(uintptr(fd), name), nil
}

// KeepRaw keeps a duplicate of a bare descriptor (a pidfd) and says its
// number.
func (d *FDs) KeepRaw(fd int, name string) (int, error) {
	nfd, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("handover: duplicate %s: %w", name, err)
	}
	return d.Keep(os.NewFile(uintptr(nfd), name))
}
