package io

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"

	"golang.org/x/sys/unix"
)

// streamFIFOs opens the client's FIFOs of a process's output streams. When
// stdout and stderr name the same FIFO, both relays write through one
// clientFIFO: one wait for the client's reader, one write end, closed when
// the second relay is done (which writes through a duplicate of its own,
// see ownEnd). With a clientFIFO each, a client whose reader
// came late (after the process wrote) was woken with two writers still in
// open(2): the first to be done closed its end before the other had
// counted as a writer, the reader saw end of file and left, and what the
// other stream wrote went nowhere.
type streamFIFOs struct {
	path string
	f    *clientFIFO
}

// open opens (or shares) the output at path, named by uri, for stream
// (path "": not shared). The FIFO is the same when the path is, or when
// another path names its inode (a symlink, a hard link, a bind mount).
func (s *streamFIFOs) open(uri, path, stream string, attachTimeout time.Duration) (output, error) {
	if path != "" {
		path = filepath.Clean(path)
	}
	if path != "" && s.f != nil && (s.path == path || namesFIFOOf(path, s.f)) {
		s.f.addUser()
		return s.f, nil
	}
	dst, err := openOutput(uri, stream, attachTimeout)
	if err != nil {
		return nil, err
	}
	if f, ok := dst.(*clientFIFO); ok && path != "" {
		s.path, s.f = path, f
	}
	return dst, nil
}

// namesFIFOOf reports whether path names the FIFO f was opened on.
func namesFIFOOf(path string, f *clientFIFO) bool {
	var st unix.Stat_t
	if unix.Stat(path, &st) != nil {
		return false // openOutput says why
	}
	id, ok := fifoID(f.handle)
	return ok && id == [2]uint64{st.Dev, st.Ino}
}

// addUser makes one more relay write through f: Close ends f only once it
// has been called once more than addUser was (see Close).
func (f *clientFIFO) addUser() {
	f.mu.Lock()
	f.extraUsers++
	f.mu.Unlock()
}

// closeForAll closes f however many relays still write through it
// (Pipes.Close ends them all). Closed a user at a time, the first call only
// counted one down, and a relay waiting for room on its own duplicate of the
// write end (ownEnd) kept waiting, holding its source, whose Close comes
// next and waits for it: until the stall clock ran out, or for ever where
// there is none.
func (f *clientFIFO) closeForAll() {
	f.mu.Lock()
	f.extraUsers = 0
	f.mu.Unlock()
	_ = f.Close()
}

// shareImported returns the clientFIFO an imported output writes through:
// f, or an earlier output's (among fifos) on the same FIFO, as stdout and
// stderr sharing one (streamFIFOs) are handed over. Each relay's export
// keeps its own duplicates of the shared ends, so without this the next
// binary held them twice and counted the FIFO's bytes twice (Queued). A
// shared one gets one more user and f's duplicates are closed; they are
// descriptors of their own, so no end is closed under another user.
func shareImported(f *clientFIFO, fifos []*clientFIFO) *clientFIFO {
	id, ok := fifoID(f.handle)
	if !ok {
		return f
	}
	for _, g := range fifos {
		if gid, ok := fifoID(g.handle); ok && gid == id {
			f.closeEnds()
			g.addUser()
			return g
		}
	}
	return f
}

// fifoID is the device and inode of the file an O_PATH handle names.
func fifoID(h *os.File) ([2]uint64, bool) {
	if h == nil {
		return [2]uint64{}, false
	}
	rc, err := h.SyscallConn()
	if err != nil {
		return [2]uint64{}, false
	}
	var st unix.Stat_t
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = unix.Fstat(int(fd), &st) }); err != nil || serr != nil {
		return [2]uint64{}, false
	}
	return [2]uint64{st.Dev, st.Ino}, true
}

// ownEnd returns a duplicate of f's write end for a relay that writes
// through f besides the first (stdout and stderr on one FIFO), and its
// release for when the relay returns. The deadlines that time a relay's
// wait for room (the stall clock, a halt's wake-up) and the lock a write
// holds while it waits belong to an *os.File: through one file the two
// relays set and cleared each other's. The relay that stalled first
// cleared the clock as it began discarding, and the other, which had just
// started to wait for room, then waited without one, for ever: its stream,
// and the process, blocked despite the stall timeout. The duplicates are
// closed with f's ends (Close), which wakes their relays as closing w does.
func (f *clientFIFO) ownEnd() (*os.File, func(), error) {
	w, err := f.ready()
	if err != nil {
		return nil, nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.endsClosed {
		return nil, nil, os.ErrClosed
	}
	fd, err := dupFD(w)
	if err != nil {
		return nil, nil, fmt.Errorf("duplicate a shared fifo's write end: %w", err)
	}
	d := os.NewFile(uintptr(fd), w.Name()) // non-blocking like w: on the poller
	f.own = append(f.own, d)
	return d, func() {
		f.mu.Lock()
		f.own = slices.DeleteFunc(f.own, func(o *os.File) bool { return o == d })
		f.mu.Unlock()
		d.Close()
	}, nil
}

// outputEnd is the file a FIFO output's relay writes through, and its
// release: the output's own, or for a relay sharing it (ownEnd) a
// duplicate.
func outputEnd(pr *pipeRelay) (*os.File, func(), error) {
	if f, ok := pr.out.(*clientFIFO); ok && pr.sharer {
		return f.ownEnd()
	}
	w, err := pr.out.ready()
	return w, func() {}, err
}
