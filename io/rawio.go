package io

import (
	"errors"
	stdio "io"
	"os"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// rawFile reads and writes a pollable file (pipe, FIFO, pty master) with
// non-blocking read(2)/write(2) issued as raw system calls, waiting for
// readiness in Go's poller: as spliceNow, a call that cannot block skips the
// scheduler's syscall bookkeeping. The callbacks are bound once, so a chunk
// allocates nothing. Not safe for concurrent use.
type rawFile struct {
	rc      syscall.RawConn
	buf     []byte
	n       int
	err     error
	onRead  func(uintptr) bool
	onWrite func(uintptr) bool
	// Optional, for a writer with a stall clock: full runs when a write
	// finds the file full, progress when one then moves bytes.
	full, progress func()
}

func newRawFile(f *os.File) (*rawFile, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return nil, err
	}
	r := &rawFile{rc: rc}
	r.onRead, r.onWrite = r.readReady, r.writeReady
	return r, nil
}

// read waits until f has data and reads at most len(buf) bytes. End of file
// is io.EOF; a hung-up pty is EIO.
func (r *rawFile) read(buf []byte) (int, error) {
	r.buf, r.n, r.err = buf, 0, nil
	if err := r.rc.Read(r.onRead); err != nil {
		return 0, closedAsErrClosed(err)
	}
	return r.n, r.err
}

func (r *rawFile) readReady(fd uintptr) bool {
	for {
		n, err := rawRead(int(fd), r.buf)
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN:
			return false
		case err != nil:
			r.err = err
		case n == 0:
			r.err = stdio.EOF
		default:
			r.n = n
		}
		return true
	}
}

// write writes all of b, waiting while f is full.
func (r *rawFile) write(b []byte) error {
	r.buf, r.err = b, nil
	if err := r.rc.Write(r.onWrite); err != nil {
		return closedAsErrClosed(err)
	}
	return r.err
}

func (r *rawFile) writeReady(fd uintptr) bool {
	for len(r.buf) > 0 {
		n, err := rawWrite(int(fd), r.buf)
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN:
			if r.full != nil {
				r.full()
			}
			return false
		case err != nil:
			r.err = err
			return true
		}
		r.buf = r.buf[n:]
		if r.progress != nil {
			r.progress()
		}
	}
	return true
}

// writeHalting writes all of b to f (r's file) as write does, for a relay
// that a halt (h) may stop: a halt asked for stops it with errHalted, what is
// unwritten becoming h's carry. A wake-up by a halt that was withdrawn before
// the relay acted on it is no failure: the write goes on. own, if not nil,
// gives the relay's own deadline for the write (its stall clock, armed by
// r.full; zero when none runs), which the halt cleared when it ended: it is
// set again, and a deadline error past it is returned as it is.
func (r *rawFile) writeHalting(f *os.File, b []byte, h *halter, own func() time.Time) error {
	for {
		err := r.write(b)
		if err == nil {
			return nil
		}
		if h.haltedIn(r) {
			return errHalted
		}
		var at time.Time
		if own != nil {
			at = own()
		}
		if !haltWakeup(err, at) {
			return err
		}
		_ = f.SetWriteDeadline(at) // zero: clears a deadline the halt left
		b = r.buf
	}
}

// readNow reads what is there without waiting (and without regard to a
// read deadline); 0 when nothing is.
func (r *rawFile) readNow(buf []byte) int {
	n := 0
	_ = r.rc.Control(func(fd uintptr) {
		for {
			m, err := rawRead(int(fd), buf)
			if err == unix.EINTR {
				continue
			}
			if err == nil {
				n = m
			}
			return
		}
	})
	return n
}

// copyRawHalting copies src to dst until src ends (nil) or either fails.
// Both must be pollable. A halt (h) stops it between two chunks or in a
// write to a full dst: the rest becomes h's carry, and it returns errHalted.
// A carry it starts with is written first. last is set to the last byte
// written.
func copyRawHalting(dst, src *os.File, buf []byte, h *halter, last *byte) error {
	r, err := newRawFile(src)
	if err != nil {
		return err
	}
	w, err := newRawFile(dst)
	if err != nil {
		return err
	}
	write := func(b []byte) error {
		if err := w.writeHalting(dst, b, h, nil); err != nil {
			return err
		}
		*last = b[len(b)-1]
		return nil
	}
	if carry := h.takeCarry(); len(carry) > 0 {
		if err := write(carry); err != nil {
			return err
		}
	}
	for {
		if h.commit() {
			return errHalted
		}
		n, err := r.read(buf)
		if n > 0 {
			if werr := write(buf[:n]); werr != nil {
				return werr
			}
		}
		if err == stdio.EOF {
			return nil
		}
		if err != nil {
			if h.commit() {
				return errHalted
			}
			if errors.Is(err, os.ErrDeadlineExceeded) {
				continue // a halt's wake-up, the halt withdrawn meanwhile
			}
			return err
		}
	}
}

func rawRead(fd int, b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	n, _, e := unix.RawSyscall(unix.SYS_READ, uintptr(fd), uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)))
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

func rawWrite(fd int, b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	n, _, e := unix.RawSyscall(unix.SYS_WRITE, uintptr(fd), uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)))
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

// openIdle opens an end of a FIFO that the shim only holds (never reads or
// writes: its own writer on a stdin FIFO, its own reader on an output FIFO)
// without registering it with Go's poller. A registered end wakes the
// daemon's poller whenever the other side moves data: a spurious wake-up on
// every chunk of the stream. Opening never waits (O_NONBLOCK); the file is
// then put back in blocking mode, which keeps os.NewFile from registering it.
func openIdle(path string, flag int) (*os.File, error) {
	fd, err := unix.Open(path, flag|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	if err := unix.SetNonblock(fd, false); err != nil {
		unix.Close(fd)
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	return os.NewFile(uintptr(fd), path), nil
}
