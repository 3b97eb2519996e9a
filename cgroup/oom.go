package cgroup

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// OOMWatcher watches any number of cgroups for OOM kills with one
// goroutine: v1 through an eventfd on memory.oom_control, v2 through watches
// on memory.events and cgroup.events in one inotify instance, all in one
// epoll set that Go's poller waits on. No goroutine or thread waits per
// container, and v2 containers share one inotify instance: the kernel allows a user 128 by
// default, node-wide (fs.inotify.max_user_instances), and kubelet, systemd
// and every other shim draw on them too. The zero value is ready; the
// goroutine starts with the first Watch.
//
// Locking: mu guards ep, next, watches, inotify, wds and the pause (paused,
// firing, missed; idle signals firing's fall to 0); notify runs without it.
type OOMWatcher struct {
	mu      sync.Mutex
	ep      *os.File // the epoll set (non-blocking, in Go's poller)
	next    uint64   // id of the next watch (epoll user data)
	watches map[uint64]*oomWatch
	inotify int                // the v2 watches' inotify instance (-1: none yet)
	wds     map[int32][]uint64 // its watch descriptors: the watches on each (a cgroup watched twice has one)

	paused bool
	firing int                 // notify calls and After functions under way
	missed map[uint64]struct{} // watches notified while paused
	later  []func()            // After functions due while paused
	idle   *sync.Cond
}

type oomWatch struct {
	fd     int     // v1: the eventfd, owned by the watch; v2: -1
	wds    []int32 // v2: its watch descriptors in the shared inotify instance
	c      *Cgroup
	notify func()
}

// oomEventBatch is how many notifications one epoll_wait takes.
const oomEventBatch = 8

// inotifyID is the epoll user data of the shared inotify instance; watch
// ids count up from 0 and never reach it.
const inotifyID = ^uint64(0)

// Watch calls notify whenever the kernel may have OOM-killed in c. It stops
// when the cgroup is removed or stop is called.
func (w *OOMWatcher) Watch(c *Cgroup, notify func()) (stop func(), err error) {
	fd := -1
	if !c.V2 {
		if fd, err = c.oomEventFD(); err != nil {
			return nil, err
		}
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.ep == nil {
		if err := w.start(); err != nil {
			if fd >= 0 {
				unix.Close(fd)
			}
			return nil, err
		}
	}
	id := w.next
	w.next++
	wt := &oomWatch{fd: fd, c: c, notify: notify}
	if c.V2 {
		if wt.wds, err = w.addInotifyWatches(c); err != nil {
			return nil, err
		}
		for _, wd := range wt.wds {
			w.wds[wd] = append(w.wds[wd], id)
		}
	} else if err := w.add(fd, id); err != nil {
		unix.Close(fd)
		return nil, err
	}
	w.watches[id] = wt
	return func() { w.remove(id) }, nil
}

// add puts fd into the epoll set with id as its user data; w.mu is held.
func (w *OOMWatcher) add(fd int, id uint64) error {
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(id), Pad: int32(id >> 32)}
	var cerr error
	if err := w.control(func(epfd int) { cerr = unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, fd, &ev) }); err != nil || cerr != nil {
		return fmt.Errorf("watch OOM kills: %v", errors.Join(err, cerr))
	}
	return nil
}

// addInotifyWatches watches c's memory.events, and its cgroup.events where
// it has one, in the shared inotify instance, made on first use; w.mu is
// held.
//
// cgroup.events changes when the cgroup's last process is gone. That is
// when systemd removes a cgroup it manages (a scope of its cgroup driver),
// and it is woken by the same change. The kill's own notice, through
// memory.events, can come up to 10 ms after the kill (the kernel spaces a
// file's notices, and the limit was hit, and noticed, just before), by which
// time the scope, and the count in it, may be gone. Woken with systemd, the
// watcher may read the count while the cgroup still stands; systemd wins at
// times (process/oomremoved.go has what else is done).
func (w *OOMWatcher) addInotifyWatches(c *Cgroup) ([]int32, error) {
	if w.inotify < 0 {
		fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
		if err != nil {
			return nil, fmt.Errorf("inotify: %w", err)
		}
		if err := w.add(fd, inotifyID); err != nil {
			unix.Close(fd)
			return nil, err
		}
		w.inotify = fd
	}
	wd, err := unix.InotifyAddWatch(w.inotify, filepath.Join(c.dir(""), "memory.events"), unix.IN_MODIFY)
	if err != nil {
		return nil, fmt.Errorf("watch memory.events: %w", err)
	}
	wds := []int32{int32(wd)}
	if wd, err := unix.InotifyAddWatch(w.inotify, filepath.Join(c.dir(""), "cgroup.events"), unix.IN_MODIFY); err == nil {
		wds = append(wds, int32(wd))
	}
	return wds, nil
}

// start makes the epoll set and its goroutine; w.mu is held.
func (w *OOMWatcher) start() error {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return fmt.Errorf("epoll: %w", err)
	}
	if err := unix.SetNonblock(epfd, true); err != nil {
		unix.Close(epfd)
		return fmt.Errorf("epoll: %w", err)
	}
	w.ep = os.NewFile(uintptr(epfd), "oom epoll") // non-blocking: Go's poller drives it
	w.watches = make(map[uint64]*oomWatch)
	w.inotify, w.wds = -1, make(map[int32][]uint64)
	go w.run(w.ep)
	return nil
}

func (w *OOMWatcher) control(f func(epfd int)) error {
	rc, err := w.ep.SyscallConn()
	if err != nil {
		return err
	}
	return rc.Control(func(fd uintptr) { f(int(fd)) })
}

// run waits for notifications until the epoll set is closed.
func (w *OOMWatcher) run(ep *os.File) {
	rc, err := ep.SyscallConn()
	if err != nil {
		return
	}
	events := make([]unix.EpollEvent, oomEventBatch)
	_ = rc.Read(func(epfd uintptr) bool {
		for {
			n, err := unix.EpollWait(int(epfd), events, 0)
			if err == unix.EINTR {
				continue
			}
			if n <= 0 {
				return false // wait in Go's poller until the set has events
			}
			for _, ev := range events[:n] {
				w.fire(uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32)
			}
		}
	})
}

// fire handles a notification of the epoll set: the shared inotify
// instance's, or one v1 watch's.
func (w *OOMWatcher) fire(id uint64) {
	if id == inotifyID {
		notified, gone := w.readInotify()
		for _, id := range gone {
			w.remove(id)
		}
		for _, id := range notified {
			w.deliver(id)
		}
		return
	}
	w.mu.Lock()
	wt := w.watches[id]
	if wt == nil {
		w.mu.Unlock()
		return // removed meanwhile
	}
	// Drain the eventfd (epoll reports it until then), under the lock:
	// remove closes it under it, and its number, once closed, may be any
	// other file of the daemon's.
	var buf [8]byte
	for {
		if _, err := unix.Read(wt.fd, buf[:]); err != unix.EINTR {
			break
		}
	}
	w.mu.Unlock()
	w.deliver(id)
}

// readInotify drains the shared inotify instance (epoll reports it until
// then) and returns the watches whose memory.events changed, and those
// whose watch the kernel ended (IN_IGNORED: the file, so the cgroup, is
// gone). The watch descriptors are read under w.mu, which remove also
// holds.
func (w *OOMWatcher) readInotify() (notified, gone []uint64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	var buf [64 * unix.SizeofInotifyEvent]byte // a watched file's events carry no name
	t := inotifyTally{seen: make(map[uint64]bool)}
	for w.inotify >= 0 {
		n, err := unix.Read(w.inotify, buf[:])
		if err == unix.EINTR {
			continue
		}
		if err != nil || n <= 0 {
			break
		}
		w.tally(&t, buf[:n])
	}
	return t.notified, t.gone
}

// inotifyTally is what a drain of the inotify queue found.
type inotifyTally struct {
	seen     map[uint64]bool // watches already in notified
	notified []uint64
	gone     []uint64
}

// tally adds the events in b (whole events, as read) to t; w.mu is held.
func (w *OOMWatcher) tally(t *inotifyTally, b []byte) {
	notify := func(ids []uint64) {
		for _, id := range ids {
			if !t.seen[id] {
				t.seen[id] = true
				t.notified = append(t.notified, id)
			}
		}
	}
	for off := 0; off+unix.SizeofInotifyEvent <= len(b); {
		ev := (*unix.InotifyEvent)(unsafe.Pointer(&b[off]))
		off += unix.SizeofInotifyEvent + int(ev.Len)
		switch {
		case ev.Mask&unix.IN_Q_OVERFLOW != 0:
			// The queue, shared by every v2 watch, overflowed: events were
			// lost, and whose is unknown. Every watch is notified: a
			// notification only makes it read its count.
			for _, ids := range w.wds {
				notify(ids)
			}
		case ev.Mask&unix.IN_IGNORED != 0:
			t.gone = append(t.gone, w.wds[ev.Wd]...)
			delete(w.wds, ev.Wd) // the kernel has dropped the watch
		default:
			notify(w.wds[ev.Wd])
		}
	}
}

// deliver calls a watch's notify, or ends the watch if the cgroup is gone
// (v1 signals the eventfd when the cgroup goes away). While paused it is
// remembered for Resume.
func (w *OOMWatcher) deliver(id uint64) {
	w.mu.Lock()
	wt := w.watches[id]
	w.mu.Unlock()
	if wt == nil {
		return // removed meanwhile
	}
	if !wt.c.Exists() {
		w.remove(id)
		return
	}
	w.mu.Lock()
	if w.paused {
		if w.missed == nil {
			w.missed = make(map[uint64]struct{})
		}
		w.missed[id] = struct{}{}
		w.mu.Unlock()
		return
	}
	w.runCounted(wt.notify)
}

// runCounted runs fn counted in firing, so that Pause waits for it. Called
// with w.mu held; it returns with w.mu released.
func (w *OOMWatcher) runCounted(fn func()) {
	w.firing++
	w.mu.Unlock()
	fn()
	w.mu.Lock()
	w.firing--
	w.cond().Broadcast()
	w.mu.Unlock()
}

// Pause holds notifications: once it returns no notify runs, and none starts
// until Resume; one that comes meanwhile is remembered for Resume. An
// in-place upgrade pauses the watcher before it hands over the containers'
// OOM counts and the event queue: a kill reported in between would be
// counted as seen in the state handed over but published into a queue
// already handed over, and lost. The successor compares each cgroup's count
// with the one it was given instead.
func (w *OOMWatcher) Pause() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.paused = true
	for w.firing > 0 {
		w.cond().Wait()
	}
}

// After runs fn once, d from now, the way the watcher runs a notification:
// not while it is paused (then at Resume; never, if the upgrade goes ahead,
// whose successor compares each cgroup's count with the one handed over).
func (w *OOMWatcher) After(d time.Duration, fn func()) {
	time.AfterFunc(d, func() {
		w.mu.Lock()
		if w.paused {
			w.later = append(w.later, fn)
			w.mu.Unlock()
			return
		}
		w.runCounted(fn)
	})
}

// Resume undoes Pause (the upgrade did not happen) and delivers what came
// meanwhile.
func (w *OOMWatcher) Resume() {
	w.mu.Lock()
	w.paused = false
	notify := w.later
	w.later = nil
	for id := range w.missed {
		if wt := w.watches[id]; wt != nil {
			notify = append(notify, wt.notify)
		}
	}
	w.missed = nil
	w.mu.Unlock()
	for _, n := range notify {
		n()
	}
}

// cond is the condition firing's changes are signalled on; w.mu is held.
func (w *OOMWatcher) cond() *sync.Cond {
	if w.idle == nil {
		w.idle = sync.NewCond(&w.mu)
	}
	return w.idle
}

// remove ends a watch (idempotent).
func (w *OOMWatcher) remove(id uint64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	wt := w.watches[id]
	if wt == nil {
		return
	}
	delete(w.watches, id)
	if wt.fd >= 0 {
		_ = w.control(func(epfd int) { _ = unix.EpollCtl(epfd, unix.EPOLL_CTL_DEL, wt.fd, nil) })
		unix.Close(wt.fd)
		return
	}
	for _, wd := range wt.wds {
		w.dropInotifyWatch(wd, id)
	}
}

// dropInotifyWatch takes watch id off watch descriptor wd, and ends the
// descriptor when no other watch is on it; w.mu is held.
func (w *OOMWatcher) dropInotifyWatch(wd int32, id uint64) {
	ids, ok := w.wds[wd]
	if !ok {
		return // the kernel dropped the watch already (IN_IGNORED)
	}
	ids = slices.DeleteFunc(ids, func(other uint64) bool { return other == id })
	if len(ids) > 0 {
		w.wds[wd] = ids // another container watches the same cgroup
		return
	}
	delete(w.wds, wd)
	_, _ = unix.InotifyRmWatch(w.inotify, uint32(wd))
}

// Close ends every watch and the goroutine.
func (w *OOMWatcher) Close() {
	w.mu.Lock()
	for id, wt := range w.watches {
		if wt.fd >= 0 {
			unix.Close(wt.fd)
		}
		delete(w.watches, id)
	}
	if w.inotify >= 0 && w.ep != nil { // the zero value's 0 is no descriptor of ours
		unix.Close(w.inotify)
		w.inotify, w.wds = -1, make(map[int32][]uint64)
	}
	ep := w.ep
	w.ep = nil
	w.mu.Unlock()
	// Outside the lock: closing waits for a notification being handled,
	// which takes the lock.
	if ep != nil {
		ep.Close()
	}
}

func (c *Cgroup) oomEventFD() (int, error) {
	dir := c.dir("memory")
	if dir == "" {
		return -1, fmt.Errorf("no memory cgroup")
	}
	efd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		return -1, fmt.Errorf("eventfd: %w", err)
	}
	oc, err := os.Open(filepath.Join(dir, "memory.oom_control"))
	if err != nil {
		unix.Close(efd)
		return -1, fmt.Errorf("open memory.oom_control: %w", err)
	}
	defer oc.Close()
	// "<eventfd> <fd of memory.oom_control>" arms the notification; the
	// kernel keeps its own reference, so oc may be closed afterwards.
	reg := strconv.Itoa(efd) + " " + strconv.FormatUint(uint64(oc.Fd()), 10)
	if err := os.WriteFile(filepath.Join(dir, "cgroup.event_control"), []byte(reg), 0); err != nil {
		unix.Close(efd)
		return -1, fmt.Errorf("register OOM eventfd: %w", err)
	}
	return efd, nil
}
