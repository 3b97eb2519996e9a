package ttrpcserver

import (
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"
)

// watcher lets idle connections wait without a goroutine each.
//
// Why: containerd opens a connection per task, even when a pod's tasks share
// one shim, and keeps it open for the task's life. A goroutine blocked in a
// read of each costs its stack (2 KiB at least) and descriptor for as long:
// most of what one more container in a pod costs the shim.
//
// How: every idle connection's socket is in one epoll set of the server's
// own, armed one-shot for input or hang-up. The set's descriptor is itself
// in Go's poller, so one goroutine (run) waits for all of them. When a
// socket is ready, that connection gets a goroutine that reads one message
// (conn.readBurst; more only if the connection holds their bytes itself),
// then re-arms the socket and ends: a pipelined request is reported again
// at once by the arming, at the cost of another round through the set. One-shot: the socket
// is reported once per arming, so two goroutines never read a connection
// at once. The socket stays in Go's poller too (net.Conn's reads and writes
// wait there); the kernel keeps both registrations.
//
// Locking: mu guards conns and next. The epoll set is the kernel's.
type watcher struct {
	epfd   int
	file   *os.File        // epfd, in Go's poller
	rc     syscall.RawConn // file's, for epoll_ctl on a descriptor held open
	closed atomic.Bool

	mu    sync.Mutex
	next  uint64
	conns map[uint64]*conn // by the token in their epoll registration
}

// watchEvents: input, or the peer gone (EPOLLIN alone reports a hang-up as
// readable too; RDHUP says it directly). One-shot: see watcher.
const watchEvents = unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLONESHOT

// newWatcher makes the epoll set and puts it in Go's poller.
func newWatcher() (*watcher, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("epoll_create1: %w", err)
	}
	// Non-blocking, so that os.NewFile puts it in Go's poller.
	if err := unix.SetNonblock(epfd, true); err != nil {
		unix.Close(epfd)
		return nil, fmt.Errorf("epoll set non-blocking: %w", err)
	}
	w := &watcher{epfd: epfd, file: os.NewFile(uintptr(epfd), "ttrpc connections"), conns: make(map[uint64]*conn)}
	rc, err := w.file.SyscallConn()
	if err != nil {
		w.file.Close()
		return nil, fmt.Errorf("epoll set: %w", err)
	}
	w.rc = rc
	return w, nil
}

// run waits for ready sockets until the watcher is closed, and starts a
// reader for each.
func (w *watcher) run() {
	var events [32]unix.EpollEvent
	// The callback returns false when nothing is ready: Go's poller then
	// waits for the set to become readable and calls it again. It never
	// returns true, so Read returns only once the file is closed.
	err := w.rc.Read(func(uintptr) bool {
		for {
			n, err := unix.EpollWait(w.epfd, events[:], 0)
			if err == unix.EINTR {
				continue
			}
			if err != nil || n == 0 {
				return false
			}
			for _, ev := range events[:n] {
				if c := w.lookup(tokenOf(ev)); c != nil {
					go c.readBurst()
				}
			}
		}
	})
	if err != nil && !w.closed.Load() {
		slog.Error("ttrpc: connection watcher ended", "error", err)
	}
}

func (w *watcher) lookup(token uint64) *conn {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.conns[token]
}

// newToken is a new connection's key in the set.
func (w *watcher) newToken() uint64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.next++
	return w.next
}

// arm asks for one report of the connection's socket being readable (or
// its peer gone); first adds the socket to the set.
func (w *watcher) arm(c *conn, first bool) error {
	if !first {
		return w.ctl(c, unix.EPOLL_CTL_MOD, watchEvents)
	}
	w.mu.Lock()
	w.conns[c.token] = c
	w.mu.Unlock()
	err := w.ctl(c, unix.EPOLL_CTL_ADD, watchEvents)
	if err != nil {
		w.forget(c)
	}
	return err
}

// remove takes the connection's socket out of the set (before it is
// closed: a descriptor number may be reused at once, the socket may not).
func (w *watcher) remove(c *conn) {
	_ = w.ctl(c, unix.EPOLL_CTL_DEL, 0)
	w.forget(c)
}

func (w *watcher) forget(c *conn) {
	w.mu.Lock()
	delete(w.conns, c.token)
	w.mu.Unlock()
}

// ctl changes the socket's registration through the RawConns of both the
// socket and the set, which hold their descriptors open meanwhile: neither
// number can name another file by then. A closed socket fails with
// net.ErrClosed.
func (w *watcher) ctl(c *conn, op int, events uint32) error {
	var errCtl error
	err := c.raw.Control(func(fd uintptr) {
		ev := unix.EpollEvent{Events: events, Fd: int32(uint32(c.token)), Pad: int32(uint32(c.token >> 32))}
		if err := w.rc.Control(func(epfd uintptr) { errCtl = unix.EpollCtl(int(epfd), op, int(fd), &ev) }); err != nil {
			errCtl = err // the server is closed
		}
	})
	if err != nil {
		return err
	}
	if errCtl != nil {
		return fmt.Errorf("epoll_ctl: %w", errCtl)
	}
	return nil
}

// tokenOf is the connection's key in an event: epoll's 64 bits of user data,
// which x/sys/unix splits into two int32 fields.
func tokenOf(ev unix.EpollEvent) uint64 {
	return uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32
}

// close ends run. Connections still registered are closed by the server.
func (w *watcher) close() {
	w.closed.Store(true)
	_ = w.file.Close()
}

// rawConn is what a connection must offer to wait in the watcher: unix and
// TCP connections do, and handover.Conn through its embedded one. A
// connection that reads ahead of what the server asked for must also say
// what it holds (Buffered, see conn): the socket no longer reports those
// bytes, and without it they would wait for the next input.
func rawConn(nc any) (syscall.RawConn, bool) {
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return nil, false
	}
	rc, err := sc.SyscallConn()
	return rc, err == nil
}
