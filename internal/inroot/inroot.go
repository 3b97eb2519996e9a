// Package inroot opens a directory below a root directory as if the root
// were "/": every symbolic link on the way, absolute or relative, and every
// "..", is resolved without leaving the root.
//
// The shim needs this for mount points inside a container's root
// filesystem: the image's content decides what the path's components are,
// and an image may hold a symlink such as etc -> /etc or x -> ../../.. that a
// plain path join would follow onto the host. The walk goes one component at
// a time through open directory descriptors (openat with O_NOFOLLOW), so a
// rename elsewhere cannot move it outside either; ".." is taken from the
// walk's own stack, never from the file system. It is the user-space form of
// openat2's RESOLVE_IN_ROOT, kept in user space so it also runs on kernels
// before 5.6 (fstat of an O_PATH descriptor needs 3.6).
package inroot

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// maxLinks is how many symbolic links one walk follows before it reports a
// loop (the kernel's own limit for a path lookup).
const maxLinks = 40

// OpenDir opens path below root as a directory, O_PATH: a descriptor good for
// naming the directory to mount(2) and friends through /proc/self/fd, not for
// reading it. With create, missing directories on the way are made (mode
// 0755), below the root as well; a dangling symlink is followed and its target
// made. The caller closes the file.
func OpenDir(root, path string, create bool) (*os.File, error) {
	d, err := Open(root, path, create)
	if err != nil {
		return nil, err
	}
	if d.parent != nil {
		d.parent.Close()
	}
	return d.File, nil
}

// Dir is a directory found below a root (Open): its descriptor, and the
// parent and the name it was found by, to open what is there again once
// something is mounted on it.
type Dir struct {
	File   *os.File // O_PATH
	parent *os.File // O_PATH; nil when the directory is the root
	name   string
	root   string
}

// Open is OpenDir keeping what Reopen needs. The caller closes the Dir.
func Open(root, path string, create bool) (*Dir, error) {
	rootFd, err := unix.Open(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open root %s: %w", root, err)
	}
	w := walk{stack: []entry{{fd: rootFd}}, create: create}
	defer w.closeAll()
	if err := w.resolve(path); err != nil {
		return nil, fmt.Errorf("%s below %s: %w", path, root, err)
	}
	shown := root + "/" + strings.TrimLeft(path, "/")
	top := w.pop()
	d := &Dir{File: os.NewFile(uintptr(top.fd), shown), name: top.name, root: root}
	if len(w.stack) > 0 {
		parent := w.pop()
		d.parent = os.NewFile(uintptr(parent.fd), shown+"/..")
	}
	return d, nil
}

// Close closes the descriptors.
func (d *Dir) Close() error {
	if d.parent != nil {
		d.parent.Close()
	}
	return d.File.Close()
}

// Reopen opens what the directory's name in its parent leads to now (the
// root: the root's path): after a mount on the directory, the mounted tree's
// root, which d.File, opened before, does not reach. The name is looked up
// once, without following a symlink, in the parent the walk had found: the
// path is not walked again, since what was just mounted may hold links that
// would lead a second walk elsewhere. The caller closes the file.
func (d *Dir) Reopen() (*os.File, error) {
	var fd int
	var err error
	if d.parent == nil {
		fd, err = unix.Open(d.root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	} else {
		fd, err = unix.Openat(int(d.parent.Fd()), d.name, unix.O_PATH|unix.O_NOFOLLOW|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	}
	if err != nil {
		return nil, fmt.Errorf("open %s again: %w", d.File.Name(), err)
	}
	return os.NewFile(uintptr(fd), d.File.Name()), nil
}

// walk is one resolution: stack holds the root and each directory resolved
// below it so far, innermost last, with the name each was opened by.
type walk struct {
	stack  []entry
	create bool
	links  int
}

type entry struct {
	fd   int
	name string // in the directory before it on the stack; "" for the root
}

func (w *walk) top() int { return w.stack[len(w.stack)-1].fd }

// pop removes the innermost entry and hands it to the caller (the root
// itself too, when it is all there is).
func (w *walk) pop() entry {
	e := w.stack[len(w.stack)-1]
	w.stack = w.stack[:len(w.stack)-1]
	return e
}

func (w *walk) closeAll() {
	for _, e := range w.stack {
		unix.Close(e.fd)
	}
	w.stack = nil
}

// resolve walks path's components from where the walk stands.
func (w *walk) resolve(path string) error {
	pending := components(path)
	for len(pending) > 0 {
		name := pending[0]
		pending = pending[1:]
		if name == ".." {
			if len(w.stack) > 1 {
				unix.Close(w.pop().fd)
			}
			continue
		}
		fd, err := w.open(name)
		if err != nil {
			return err
		}
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil {
			unix.Close(fd)
			return fmt.Errorf("stat %s: %w", name, err)
		}
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFDIR:
			w.stack = append(w.stack, entry{fd: fd, name: name})
		case unix.S_IFLNK:
			target, err := readlink(fd)
			unix.Close(fd)
			if err != nil {
				return fmt.Errorf("read link %s: %w", name, err)
			}
			if w.links++; w.links > maxLinks {
				return fmt.Errorf("%s: %w", name, unix.ELOOP)
			}
			if strings.HasPrefix(target, "/") {
				// Absolute: from the root again.
				for len(w.stack) > 1 {
					unix.Close(w.pop().fd)
				}
			}
			pending = append(components(target), pending...)
		default:
			unix.Close(fd)
			return fmt.Errorf("%s: %w", name, unix.ENOTDIR)
		}
	}
	return nil
}

// open opens name in the current directory without following it, making it
// first when it is missing and the walk creates.
func (w *walk) open(name string) (int, error) {
	const flags = unix.O_PATH | unix.O_NOFOLLOW | unix.O_CLOEXEC
	fd, err := unix.Openat(w.top(), name, flags, 0)
	if errors.Is(err, unix.ENOENT) && w.create {
		// EEXIST: made meanwhile by someone else; the next open finds it.
		if err := unix.Mkdirat(w.top(), name, 0o755); err != nil && !errors.Is(err, unix.EEXIST) {
			return -1, fmt.Errorf("make directory %s: %w", name, err)
		}
		fd, err = unix.Openat(w.top(), name, flags, 0)
	}
	if err != nil {
		return -1, fmt.Errorf("open %s: %w", name, err)
	}
	return fd, nil
}

// components splits a path into the names to walk, dropping empty ones and
// ".".
func components(path string) []string {
	var out []string
	for _, c := range strings.Split(path, "/") {
		if c != "" && c != "." {
			out = append(out, c)
		}
	}
	return out
}

// readlink reads the target of the symlink open (O_PATH) at fd.
func readlink(fd int) (string, error) {
	for size := 256; ; size *= 2 {
		buf := make([]byte, size)
		n, err := unix.Readlinkat(fd, "", buf)
		if err != nil {
			return "", err
		}
		if n < size {
			return string(buf[:n]), nil
		}
	}
}

// MountID is the ID of the mount f's file is on: statx's STATX_MNT_ID
// (Linux 5.8), or before that the mnt_id line of /proc/self/fdinfo (3.15).
func MountID(f *os.File) (uint64, error) {
	var st unix.Statx_t
	err := unix.Statx(int(f.Fd()), "", unix.AT_EMPTY_PATH, unix.STATX_MNT_ID, &st)
	if err == nil && st.Mask&unix.STATX_MNT_ID != 0 {
		return st.Mnt_id, nil
	}
	id, ferr := mountIDFromFdinfo(f)
	if ferr != nil {
		return 0, fmt.Errorf("mount ID of %s: %w", f.Name(), errors.Join(err, ferr))
	}
	return id, nil
}

// mountIDFromFdinfo is MountID for kernels before 5.8.
func mountIDFromFdinfo(f *os.File) (uint64, error) {
	info, err := os.ReadFile(fmt.Sprintf("/proc/self/fdinfo/%d", f.Fd()))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(info), "\n") {
		if v, ok := strings.CutPrefix(line, "mnt_id:"); ok {
			return strconv.ParseUint(strings.TrimSpace(v), 10, 64)
		}
	}
	return 0, errors.New("no mnt_id in fdinfo")
}

// ProcPath is the /proc/self/fd name of f, for system calls that take a
// path: the kernel resolves it to the very directory f was opened on.
func ProcPath(f *os.File) string {
	return fmt.Sprintf("/proc/self/fd/%d", f.Fd())
}
