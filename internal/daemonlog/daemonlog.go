// Package daemonlog keeps a shim daemon's own log flowing to containerd.
//
// The daemon logs to its standard error, which it points, as it starts, at
// the `log` FIFO of the bundle it was started in; containerd reads that FIFO, for as
// long as it serves the bundle's task, and copies it into its own log. The
// Go runtime writes a fatal panic to the same descriptor. A daemon that
// serves a group outlives that first task: once the task is deleted,
// containerd stops reading its FIFO, and everything the daemon logs after,
// down to the panic that would explain its crash, is lost (the stock shim
// loses it). A Sink moves standard error to the FIFO of another bundle the
// daemon serves, which containerd still reads.
package daemonlog

import (
	"errors"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// retryAfter spaces the searches failed writes start: each costs an open per
// bundle, and finds nothing while containerd is down.
const retryAfter = time.Second

// fullWait bounds how long a write waits for room in a full FIFO whose
// reader is there (a record larger than the pipe, a reader a little
// behind) before it drops the rest. Once a wait has run out, the FIFO
// counts as stalled (containerd stopped, or not keeping up) and writes do
// not wait again until one goes through whole.
const fullWait = 500 * time.Millisecond

// Sink is the daemon's log writer: its standard error, moved when the FIFO
// behind it is no longer read.
//
// Locking: mu guards current, live, nextTry, searching and stalled, and
// makes a move and a write exclusive, so that a record is never split
// across two FIFOs.
// The list of bundles is never taken with mu held, nor on a writer's
// goroutine: it takes the services' locks, and a writer may hold one of
// them while it logs.
type Sink struct {
	fd        int // standard error; another descriptor in tests
	mu        sync.Mutex
	live      func() []string // the bundles served now; nil: none known yet
	current   string          // the bundle whose FIFO standard error is, once found
	nextTry   time.Time       // no search after a failed write before this
	searching bool            // a search started by a failed write is running
	stalled   bool            // the last write found the FIFO full past fullWait
}

// New returns a Sink over the daemon's standard error, the descriptor the
// Go runtime writes a fatal panic to.
func New() *Sink { return &Sink{fd: 2} }

// Follow gives the Sink the bundles it may move to: live lists the bundles
// of the tasks and pods the daemon serves. Until it is called, the Sink only
// writes.
func (s *Sink) Follow(live func() []string) {
	s.mu.Lock()
	s.live = live
	s.mu.Unlock()
}

// Write writes p to standard error. A FIFO that fills part way through p
// (EAGAIN after a partial write) is waited for at most fullWait: a record
// longer than the pipe (a goroutine dump) meets a full FIFO while
// containerd reads on, and was cut there, its end glued to the next line. A
// record that finds the FIFO full from its start is dropped at once. Past that wait containerd is taken for stopped, the rest
// of p is dropped, and no write waits until one goes through whole, as a
// shim must drop log lines rather than stall on them. A FIFO nobody reads
// any more (EPIPE: a reader gone without its task's Delete) loses p, and
// starts a search, in the background, for a bundle's FIFO that is read,
// for the records after it.
func (s *Sink) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	wait := fullWait
	if s.stalled {
		wait = 0
	}
	n, err := writeAll(s.fd, p, wait)
	s.stalled = errors.Is(err, unix.EAGAIN)
	if errors.Is(err, unix.EPIPE) && s.live != nil && !s.searching && time.Now().After(s.nextTry) {
		s.searching = true
		s.nextTry = time.Now().Add(retryAfter)
		go s.search(s.live)
	}
	return n, err
}

// search moves standard error off a FIFO that a write found unread.
func (s *Sink) search(live func() []string) {
	bundles := live()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.searching = false
	s.moveLocked(bundles)
}

// TaskGone is told that a task left the daemon, outside the services'
// locks: if its bundle's FIFO was standard error, the log moves now, while
// containerd may still be reading the old one, so that nothing written
// meanwhile is lost, a panic included. Standard error that is no FIFO
// (/dev/null when the bundle had no `log`: `start` gives the daemon no
// other) is left alone.
func (s *Sink) TaskGone() {
	s.mu.Lock()
	live := s.live
	s.mu.Unlock()
	if live == nil {
		return
	}
	bundles := live()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.current != "" && slices.Contains(bundles, s.current) {
		return
	}
	var st unix.Stat_t
	if unix.Fstat(s.fd, &st) != nil || st.Mode&unix.S_IFMT != unix.S_IFIFO {
		return
	}
	for _, b := range bundles {
		if isFIFO(filepath.Join(b, "log"), st) {
			s.current = b // found where it is: nothing to move
			return
		}
	}
	s.moveLocked(bundles)
}

// moveLocked points standard error at the `log` FIFO of one of bundles that
// has a reader, other than the current one, if there is one.
func (s *Sink) moveLocked(bundles []string) {
	slices.Sort(bundles) // the same choice for the same bundles
	for _, b := range bundles {
		if b == s.current {
			continue
		}
		// Non-blocking: opening fails (ENXIO) where nobody reads, and
		// writes never stall the daemon.
		fd, err := unix.Open(filepath.Join(b, "log"), unix.O_WRONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
		if err != nil {
			continue
		}
		var st unix.Stat_t
		if unix.Fstat(fd, &st) != nil || st.Mode&unix.S_IFMT != unix.S_IFIFO {
			unix.Close(fd) // a file someone named `log`: not containerd's
			continue
		}
		err = unix.Dup3(fd, s.fd, 0)
		unix.Close(fd)
		if err == nil {
			s.current = b
			return
		}
	}
}

// isFIFO says whether path is the FIFO st describes.
func isFIFO(path string, st unix.Stat_t) bool {
	var other unix.Stat_t
	return unix.Stat(path, &other) == nil && other.Dev == st.Dev && other.Ino == st.Ino
}

// writeAll writes p to fd, going on after a partial write (a record longer
// than the room left in the FIFO), and says how much went.
func writeAll(fd int, p []byte, wait time.Duration) (int, error) {
	n := 0
	var deadline time.Time
	for n < len(p) {
		m, err := unix.Write(fd, p[n:])
		if m > 0 {
			n += m
		}
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN && wait > 0 && n > 0:
			// Full part way through the record (longer than the room
			// left): wait a little for the reader, if it is there, rather
			// than cut it. A record that found no room at all is dropped
			// whole at once, as before: an ordinary line never waits.
			if deadline.IsZero() {
				deadline = time.Now().Add(wait)
			}
			left := time.Until(deadline)
			if left <= 0 {
				return n, err
			}
			fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLOUT}}
			if _, perr := unix.Poll(fds, int(left/time.Millisecond)+1); perr != nil && perr != unix.EINTR {
				return n, err
			}
			continue
		case err != nil:
			return n, err
		case m == 0:
			return n, unix.EIO
		}
	}
	return n, nil
}
