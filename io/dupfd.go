package io

import (
	"os"

	"golang.org/x/sys/unix"
)

// dupFD returns a close-on-exec duplicate of f's descriptor, owned by no
// os.File. It goes through SyscallConn: f.Fd() would switch the open file
// description, shared by every duplicate, to blocking mode.
func dupFD(f *os.File) (int, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return -1, err
	}
	fd := -1
	var derr error
	if err := rc.Control(func(u uintptr) { fd, derr = unix.FcntlInt(u, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
		return -1, err
	}
	return fd, derr
}
