// Package rawfile reads and writes small files with bare system calls.
//
// On Linux os.Open and os.WriteFile offer every new file to the network
// poller first (two fcntl calls, an epoll_ctl the kernel refuses for a
// regular file, two fcntl calls back), and os.ReadFile allocates a fresh
// buffer per file. For the small files the shim reads and writes on its busy
// paths (cgroup statistics polled every second, a pid file and a process spec
// per exec, a cgroup migration per warming) that is most of the work. These
// helpers do one open, the reads or writes, and one close.
package rawfile

import (
	"os"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ReadInto reads the whole file at path into buf, doubling it while the file
// is longer, and returns the content and the buffer as grown (for reuse: a
// pool can keep it). A nil or empty buf starts at 64 bytes.
func ReadInto(path string, buf []byte) (data, grown []byte, err error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, buf, &os.PathError{Op: "open", Path: path, Err: err}
	}
	data, grown, err = readAll(fd, buf)
	if err != nil {
		return nil, grown, &os.PathError{Op: "read", Path: path, Err: err}
	}
	return data, grown, nil
}

// maxStackPath is the longest path ReadIn builds without allocating; a
// longer one is joined on the heap.
const maxStackPath = 255

// ReadIn is ReadInto of the file dir + "/" + parts[0] + parts[1] + ...,
// for a caller that reads many files of one directory, or one counter under
// several prefixes, on a path polled every second: the path is built on the
// stack and opened with a raw openat, so a read allocates nothing unless
// the file outgrows buf or the path is longer than maxStackPath. For the
// same reason its error is the bare errno (unix.Errno), not an os.PathError:
// a missing optional file costs nothing either. Callers add the path where
// the error is reported.
func ReadIn(buf []byte, dir string, parts ...string) (data, grown []byte, err error) {
	var p [maxStackPath + 1]byte
	n := copy(p[:maxStackPath], dir)
	fits := n == len(dir) && n < maxStackPath
	if fits {
		p[n] = '/'
		n++
		for _, s := range parts {
			m := copy(p[n:maxStackPath], s)
			n += m
			if m < len(s) {
				fits = false
				break
			}
		}
	}
	var fd int
	if fits {
		p[n] = 0
		atCWD := unix.AT_FDCWD // a negative constant: converted at run time
		r, _, e := unix.Syscall6(unix.SYS_OPENAT, uintptr(atCWD), uintptr(unsafe.Pointer(&p[0])),
			uintptr(unix.O_RDONLY|unix.O_CLOEXEC), 0, 0, 0)
		if e != 0 {
			return nil, buf, e
		}
		fd = int(r)
	} else {
		fd, err = unix.Open(dir+"/"+strings.Join(parts, ""), unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return nil, buf, err
		}
	}
	return readAll(fd, buf)
}

// readAll reads fd to its end into buf (grown by doubling) and closes it.
func readAll(fd int, buf []byte) (data, grown []byte, err error) {
	defer unix.Close(fd)
	if len(buf) == 0 {
		buf = make([]byte, 64)
	}
	n := 0
	for {
		if n == len(buf) {
			buf = append(buf, make([]byte, len(buf))...)
		}
		m, err := unix.Read(fd, buf[n:])
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, buf, err
		}
		if m == 0 {
			return buf[:n], buf, nil
		}
		n += m
	}
}

// Write writes data to the file at path, opened write-only with flag added
// (unix.O_CREAT, unix.O_TRUNC, ...) and perm for a file it creates. One
// write(2) for data that fits, as kernel files such as cgroup.procs expect.
func Write(path string, data []byte, flag int, perm uint32) error {
	fd, err := unix.Open(path, unix.O_WRONLY|unix.O_CLOEXEC|flag, perm)
	if err != nil {
		return &os.PathError{Op: "open", Path: path, Err: err}
	}
	for len(data) > 0 {
		n, err := unix.Write(fd, data)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			unix.Close(fd)
			return &os.PathError{Op: "write", Path: path, Err: err}
		}
		data = data[n:]
	}
	if err := unix.Close(fd); err != nil {
		return &os.PathError{Op: "close", Path: path, Err: err}
	}
	return nil
}
