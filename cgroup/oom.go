package cgroup

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"golang.org/x/sys/unix"
)

// WatchOOM calls notify whenever the kernel may have OOM-killed in the
// cgroup: v1 through an eventfd on memory.oom_control, v2 through inotify on
// memory.events. It stops when the cgroup is removed or stop is called. The
// fds are driven by Go's poller: no thread waits per container.
func (c *Cgroup) WatchOOM(notify func()) (stop func(), err error) {
	var f *os.File
	if c.V2 {
		f, err = c.inotifyEvents()
	} else {
		f, err = c.oomEventFD()
	}
	if err != nil {
		return nil, err
	}
	go func() {
		// An eventfd read is 8 bytes; an inotify event on a watched file
		// (no name) is 16. One small buffer per container, not a page.
		buf := make([]byte, 64)
		for {
			if _, err := f.Read(buf); err != nil {
				return // closed by stop
			}
			if !c.Exists() {
				// v1 also signals the eventfd when the cgroup goes away.
				f.Close()
				return
			}
			notify()
		}
	}()
	return func() { f.Close() }, nil
}

func (c *Cgroup) oomEventFD() (*os.File, error) {
	dir := c.dir("memory")
	if dir == "" {
		return nil, fmt.Errorf("no memory cgroup")
	}
	efd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		return nil, fmt.Errorf("eventfd: %w", err)
	}
	oc, err := os.Open(filepath.Join(dir, "memory.oom_control"))
	if err != nil {
		unix.Close(efd)
		return nil, fmt.Errorf("open memory.oom_control: %w", err)
	}
	defer oc.Close()
	// "<eventfd> <fd of memory.oom_control>" arms the notification; the
	// kernel keeps its own reference, so oc may be closed afterwards.
	reg := strconv.Itoa(efd) + " " + strconv.FormatUint(uint64(oc.Fd()), 10)
	if err := os.WriteFile(filepath.Join(dir, "cgroup.event_control"), []byte(reg), 0); err != nil {
		unix.Close(efd)
		return nil, fmt.Errorf("register OOM eventfd: %w", err)
	}
	return os.NewFile(uintptr(efd), "oom eventfd"), nil
}

func (c *Cgroup) inotifyEvents() (*os.File, error) {
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		return nil, fmt.Errorf("inotify: %w", err)
	}
	if _, err := unix.InotifyAddWatch(fd, filepath.Join(c.dir(""), "memory.events"), unix.IN_MODIFY); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("watch memory.events: %w", err)
	}
	return os.NewFile(uintptr(fd), "memory.events inotify"), nil
}
