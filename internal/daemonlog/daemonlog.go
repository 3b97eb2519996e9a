// Package daemonlog keeps a shim daemon's own log flowing to containerd.
//
// The daemon logs to its standard error, which `start` points at the `log`
// FIFO of the bundle it was started in; containerd reads that FIFO, for as
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

// retryAfter spaces the searches a failed write starts when no bundle's FIFO
// has a reader: each costs an open per bundle.
const retryAfter = time.Second

// Sink is the daemon's log writer: its standard error, moved when the FIFO
// behind it is no longer read.
//
// Locking: mu guards current, live and nextTry, and makes a move and a write
// exclusive, so that a record is never split across two FIFOs.
type Sink struct {
	fd      int // standard error; another descriptor in tests
	mu      sync.Mutex
	live    func() []string // the bundles served now; nil: none known yet
	current string          // the bundle whose FIFO standard error is, once found
	nextTry time.Time       // no search after a failed write before this
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

// Write writes p to standard error. A FIFO nobody reads any more (EPIPE)
// sends it to a bundle's FIFO that has a reader, if one is found; a full
// FIFO (EAGAIN: containerd is slow or down) drops the rest of p, as a shim
// must drop log lines rather than stall on them.
func (s *Sink) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n, err := writeAll(s.fd, p)
	if errors.Is(err, unix.EPIPE) && time.Now().After(s.nextTry) {
		if s.moveLocked() {
			var m int
			m, err = writeAll(s.fd, p[n:])
			n += m
		} else {
			s.nextTry = time.Now().Add(retryAfter)
		}
	}
	return n, err
}

// TaskGone is told that a task left the daemon: if its bundle's FIFO was
// standard error, the log moves now, while containerd may still be reading
// the old one, so that nothing written meanwhile is lost, a panic included.
// Standard error that is no FIFO (/dev/null when the bundle had no `log`,
// or what a tool gave) is left alone.
func (s *Sink) TaskGone() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.live == nil {
		return
	}
	live := s.live()
	if s.current != "" && slices.Contains(live, s.current) {
		return
	}
	var st unix.Stat_t
	if unix.Fstat(s.fd, &st) != nil || st.Mode&unix.S_IFMT != unix.S_IFIFO {
		return
	}
	for _, b := range live {
		if isFIFO(filepath.Join(b, "log"), st) {
			s.current = b // found where it is: nothing to move
			return
		}
	}
	s.moveLocked()
}

// moveLocked points standard error at the `log` FIFO of a live bundle that
// has a reader, other than the current one, and says whether it did.
func (s *Sink) moveLocked() bool {
	if s.live == nil {
		return false
	}
	live := s.live()
	slices.Sort(live) // the same choice for the same bundles
	for _, b := range live {
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
			return true
		}
	}
	return false
}

// isFIFO says whether path is the FIFO st describes.
func isFIFO(path string, st unix.Stat_t) bool {
	var other unix.Stat_t
	return unix.Stat(path, &other) == nil && other.Dev == st.Dev && other.Ino == st.Ino
}

// writeAll writes p to fd, going on after a partial write (a record longer
// than the room left in the FIFO), and says how much went.
func writeAll(fd int, p []byte) (int, error) {
	n := 0
	for n < len(p) {
		m, err := unix.Write(fd, p[n:])
		if m > 0 {
			n += m
		}
		switch {
		case err == unix.EINTR:
			continue
		case err != nil:
			return n, err
		case m == 0:
			return n, unix.EIO
		}
	}
	return n, nil
}
