package io

import (
	"errors"
	"fmt"
	stdio "io"
	"os"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"
)

// output is where an output relay writes: a plain file, ready at once, or a
// client's FIFO, ready once a reader is there (clientFIFO).
type output interface {
	stdio.Closer
	// ready waits until the destination can be written to.
	ready() (*os.File, error)
	// queued is how many bytes wait in it for the client (FIFOs only).
	queued() uint64
}

// readyFile is an output that needs no waiting: a plain file.
type readyFile struct{ *os.File }

func (f readyFile) ready() (*os.File, error) { return f.File, nil }
func (f readyFile) queued() uint64           { return 0 }

// clientFIFO is the shim's side of a client's output FIFO.
//
// A FIFO keeps what is written to it only while some end is open, and a
// reader that opens it after every end was closed waits forever for a
// writer. Clients (containerd's Go client, ctr, CRI) open their reader
// before they send the request, but in a goroutine of their own, which a
// busy machine may run late: if the shim wrote a short-lived process's output
// and closed before that, the client would read nothing and never see the
// end. So the shim writes only once a client reader is there, as containerd's
// own shim does by opening for writing in blocking mode, but without holding
// up the request: the wait runs in the background, and the process's output
// waits in its pipe meanwhile. Once writing, the shim also holds a reader of
// its own, so a client that detaches later never makes the relay fail with
// EPIPE. A client that has not come within attachTimeout is not waited for
// any longer (the stall policy then decides the output's fate, as for a
// reader that stopped reading).
//
// Locking: mu guards keep, closed, extraUsers, endsClosed, lingering and own; w and err
// are written once, before opened is closed, and read only after.
type clientFIFO struct {
	handle *os.File // O_PATH handle: the FIFO even if its path goes away
	opened chan struct{}
	w      *os.File // write end, once a reader is there
	err    error

	mu         sync.Mutex
	keep       *os.File      // the shim's own reader
	closed     bool          // Close was called (by its last user)
	extraUsers int           // relays besides the first writing through it (streamFIFOs)
	endsClosed bool          // and the ends are closed: no reader is opened any more
	released   chan struct{} // closed with endsClosed
	// lingering: the stream ended with bytes unread and no client reader,
	// and the write end stays open for the next reader (fifoend.go).
	lingering bool
	// own are the duplicates of w that relays sharing f write through
	// (ownEnd, sharedfifo.go); closed with the ends.
	own []*os.File
}

// DefaultAttachTimeout bounds the wait for a client to open its output FIFO
// (see clientFIFO). It is not the stall timeout, which a task's options set:
// a client that never comes would keep a relay that waits forever
// unattached, and so not halted for an in-place upgrade, and a very short
// one would close a short-lived process's output before a slow client read it.
const DefaultAttachTimeout = 15 * time.Second

// openClientFIFO starts attaching to the FIFO at path; ready returns its
// write end. attachTimeout bounds the wait for a reader (negative: no bound).
func openClientFIFO(path, stream string, attachTimeout time.Duration) (*clientFIFO, error) {
	h, err := os.OpenFile(path, unix.O_PATH|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open %s fifo: %w", stream, classify(err))
	}
	f := newClientFIFO(h)
	// The common case: the client's reader is there already.
	w, err := os.OpenFile(f.viaHandle(), unix.O_WRONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	switch {
	case err == nil:
		f.attached(w, nil)
	case errors.Is(err, unix.ENXIO): // no reader yet
		go f.awaitReader(attachTimeout)
	default:
		h.Close()
		return nil, fmt.Errorf("open %s fifo: %w", stream, classify(err))
	}
	return f, nil
}

func newClientFIFO(handle *os.File) *clientFIFO {
	return &clientFIFO{handle: handle, opened: make(chan struct{}), released: make(chan struct{})}
}

// viaHandle names the FIFO through the handle, so a path that was removed
// or replaced meanwhile cannot make the shim wait on the wrong file.
func (f *clientFIFO) viaHandle() string { return fmt.Sprintf("/proc/self/fd/%d", f.handle.Fd()) }

// awaitReader opens the write end in blocking mode, which returns when a
// reader opens the FIFO: the client's, or the shim's own after the timeout
// or Close (holdOpen).
func (f *clientFIFO) awaitReader(attachTimeout time.Duration) {
	if attachTimeout > 0 { // negative: until a client comes or Close
		timer := time.AfterFunc(attachTimeout, func() { f.holdOpenSoon(f.opened) })
		defer timer.Stop()
	}
	w, err := os.OpenFile(f.viaHandle(), unix.O_WRONLY|unix.O_CLOEXEC, 0)
	f.attached(w, err)
}

// attached records the write end and adds the shim's own reader.
func (f *clientFIFO) attached(w *os.File, err error) {
	if err == nil {
		if !f.holdOpen() {
			go f.holdOpenSoon(f.released) // until Close
		}
		f.mu.Lock()
		if f.closed {
			w.Close()
			err = os.ErrClosed
		}
		f.mu.Unlock()
	}
	if err == nil {
		f.w = w
	} else {
		f.err = fmt.Errorf("open fifo for writing: %w", err)
	}
	close(f.opened)
}

// holdOpen opens the shim's own reader (once) and reports whether it is
// open. A writer waiting in open returns at that moment.
func (f *clientFIFO) holdOpen() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.keep == nil && !f.endsClosed {
		f.keep, _ = openReader(f.viaHandle(), unix.O_RDONLY)
	}
	return f.keep != nil
}

// openReader opens the shim's own reader (a variable for tests that run the
// shim out of descriptors).
var openReader = openIdle

// holdOpenRetry is how often a reader the shim could not open (out of
// descriptors) is tried again.
var holdOpenRetry = 100 * time.Millisecond

// holdOpenSoon opens the shim's own reader, trying again until it can or
// stop is closed: out of descriptors the first try fails, and only a reader
// ends a wait in awaitReader, or keeps a writing relay from EPIPE when the
// client detaches.
func (f *clientFIFO) holdOpenSoon(stop <-chan struct{}) {
	for !f.holdOpen() {
		select {
		case <-stop:
			return
		case <-time.After(holdOpenRetry):
		}
	}
}

// mustBeOpened is FailedPrecondition while the client has not opened the
// FIFO: a relay still waiting for it cannot be halted and handed over.
func (f *clientFIFO) mustBeOpened(stream string) error {
	select {
	case <-f.opened:
		return nil
	default:
		return fmt.Errorf("%s: the client has not opened its FIFO yet: %w", stream, errdefs.ErrFailedPrecondition)
	}
}

func (f *clientFIFO) ready() (*os.File, error) {
	<-f.opened
	return f.w, f.err
}

// queued reads the FIFO's fill through the shim's own reader, or, while
// the FIFO lingers for its next reader (that reader closed, fifoend.go),
// through the write end.
func (f *clientFIFO) queued() uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	switch {
	case f.closed:
		return 0
	case f.keep != nil:
		return queuedIn(f.keep)
	case f.lingering:
		return queuedIn(f.w)
	}
	return 0
}

// Close stops waiting for a reader and closes the shim's ends. Idempotent.
// Out of descriptors, a wait for a reader cannot be ended at once: Close
// then returns, and the ends are closed in the background once it has.
// Shared by several relays (addUser), it does so at its last user's call.
func (f *clientFIFO) Close() error {
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		return nil
	}
	if f.extraUsers > 0 {
		f.extraUsers--
		f.mu.Unlock()
		return nil
	}
	f.closed = true
	f.mu.Unlock()
	if !f.holdOpen() { // it ends a wait in awaitReader
		go func() {
			f.holdOpenSoon(f.opened)
			f.closeEnds()
		}()
		return nil
	}
	return f.closeEnds()
}

// closeEnds closes the shim's ends once the wait for a reader is over.
func (f *clientFIFO) closeEnds() error {
	<-f.opened
	if f.w != nil {
		f.w.Close()
	}
	f.mu.Lock()
	if f.keep != nil {
		f.keep.Close()
	}
	for _, d := range f.own {
		d.Close() // wakes a relay waiting on it, as closing w does
	}
	f.own = nil
	f.endsClosed = true
	f.mu.Unlock()
	close(f.released)
	return f.handle.Close()
}
