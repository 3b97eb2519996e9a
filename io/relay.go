package io

import (
	"errors"
	"io"
	"os"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// spliceChunk is the most one splice(2) call may move. The kernel caps a call
// at what the pipes hold (64 KiB by default), so this only bounds the request.
const spliceChunk = 1 << 20

// Pipes keep the kernel's default size (64 KiB). The shim once grew a bulk
// stream's pipes to 1 MiB (F_SETPIPE_SZ while the stream flowed), which more
// than doubled throughput, but on Linux 6.1 (Debian 12's kernel) that lost
// whole pages of output now and then (an 8 MiB stream arrived 64 KiB to
// 1.6 MiB short in about half the runs, with either pipe resized; none with
// neither): nothing a container prints may be lost, so pipes are not resized.

// copyBufSize is the buffer of the fallback copy, used when a side is not a
// pipe (a regular file behind file:// or a plain path).
const copyBufSize = 32 << 10

var copyBufs = sync.Pool{New: func() any { b := make([]byte, copyBufSize); return &b }}

// A chunk of interactive size is copied through user space, in copyChunk
// buffers taken from a pool only while a chunk is in flight: write(2) wakes
// the reader with a "sync" wake-up, which the scheduler serves on the
// writer's CPU, where splice(2)'s plain wake-up lets it pick another one and
// pay a cross-CPU wake-up (expensive in a VM): an 8-byte echo round trip
// through splice took twice as long as through read/write, for no saving.
// A read that fills the buffer means more is waiting: the rest goes by
// splice.
const copyChunk = 8 << 10

var chunkBufs = sync.Pool{New: func() any { b := make([]byte, copyChunk); return &b }}

// relay moves bytes from src to dst until src reaches end of file, or until
// h halts it between two chunks (errHalted). When both are pipes or FIFOs,
// bulk bytes move by splice(2) and never enter user space (small chunks are
// copied, see copyChunk); otherwise they go through one pooled buffer
// (copyHalting).
func relay(dst, src *os.File, stall *stallPolicy, h *halter) (int64, error) {
	if isPipe(src) && isPipe(dst) {
		if n, err, ok := splicePipes(dst, src, stall, h); ok {
			return n, err
		}
	}
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	return copyHalting(dst, src, *bp, stall, h)
}

// copyHalting is relay for a pair splice cannot serve: a plain file on one
// side (an output path naming a regular file or a device, a stdin path
// naming a regular file). Like the splicer it writes h's carry first and
// stops between two chunks when h asks; a halt that wakes a write (its
// deadline) leaves what was not written in h's carry, so that nothing read
// is lost or written twice. A deadline that finds the halt withdrawn is no
// error: the copy goes on. (A regular file takes no deadline and never
// makes a read or a write wait; the pipe on the other side does.)
func copyHalting(dst, src *os.File, buf []byte, stall *stallPolicy, h *halter) (written int64, err error) {
	if h == nil {
		h = newHalter(nil) // a relay nobody halts
	}
	if carry := h.takeCarry(); len(carry) > 0 {
		n, err := writeHalting(dst, carry, stall, h)
		written += n
		if err != nil {
			return written, err
		}
	}
	for {
		if h.commit() {
			return written, errHalted
		}
		n, rerr := src.Read(buf)
		if n > 0 {
			w, err := writeHalting(dst, buf[:n], stall, h)
			written += w
			if err != nil {
				return written, err
			}
		}
		switch {
		case rerr == nil:
		case errors.Is(rerr, io.EOF):
			return written, nil
		case h.commit():
			return written, errHalted
		case errors.Is(rerr, os.ErrDeadlineExceeded):
			// a halt's wake-up, the halt withdrawn meanwhile
		default:
			return written, rerr
		}
	}
}

// writeHalting writes b whole to dst, reporting progress to stall; a halt
// that wakes it keeps the rest of b as h's carry and ends it with errHalted.
func writeHalting(dst *os.File, b []byte, stall *stallPolicy, h *halter) (int64, error) {
	var written int64
	for len(b) > 0 {
		n, err := dst.Write(b)
		stall.progressed(int64(n))
		written += int64(n)
		b = b[n:]
		switch {
		case err == nil:
		case errors.Is(err, os.ErrDeadlineExceeded) && h.commit():
			h.carry = append([]byte(nil), b...)
			return written, errHalted
		case errors.Is(err, os.ErrDeadlineExceeded):
			// a halt's wake-up, the halt withdrawn meanwhile: write the rest
		default:
			return written, err
		}
	}
	return written, nil
}

// isPipe reports whether f is a pipe or FIFO. It looks through SyscallConn:
// f.Fd() would switch a pipe from os.Pipe back to blocking mode, which
// takes it out of the poller's hands (and disables deadlines).
func isPipe(f *os.File) bool {
	typ, err := fileType(f)
	return err == nil && typ == unix.S_IFIFO
}

// fileType is the type bits of f's mode (unix.S_IFIFO, S_IFREG, ...), read
// through SyscallConn for the reason isPipe gives.
func fileType(f *os.File) (uint32, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return 0, err
	}
	var st unix.Stat_t
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = unix.Fstat(int(fd), &st) }); err != nil {
		return 0, err
	}
	if serr != nil {
		return 0, serr
	}
	return st.Mode & unix.S_IFMT, nil
}

// splicePipes relays src into dst, waiting for readiness through Go's
// network poller so no thread blocks. Both files must be registered with the
// poller, as every pipe from os.Pipe and every FIFO from os.OpenFile is.
// ok is false when the kernel refuses splice for this pair before anything moved.
//
// One RawConn wait on src lasts for the whole stream (re-entered only after
// a stall), with its callbacks bound once: a chunk allocates nothing. A
// small chunk costs a read and a write; bulk costs a splice and a readiness
// poll per pipeful.
func splicePipes(dst, src *os.File, stall *stallPolicy, h *halter) (written int64, err error, ok bool) {
	srcRC, err1 := src.SyscallConn()
	dstRC, err2 := dst.SyscallConn()
	if err1 != nil || err2 != nil {
		return 0, nil, false
	}
	s := &splicer{dst: dst, dstRC: dstRC, stall: stall, halt: h}
	s.onSrc, s.onDst = s.srcReady, s.dstReady
	if h != nil {
		// A predecessor read these and did not deliver them: first in line.
		s.pending = h.takeCarry()
	}
	defer s.releaseBuf()
	if h != nil && h.discarding {
		// A predecessor was discarding for a stalled reader: go on.
		h.discarding = false
		s.stalled = true
	}
	for {
		var rerr error
		if !s.stalled {
			rerr = srcRC.Read(s.onSrc)
		}
		switch {
		case s.halting():
			h.carry = append([]byte(nil), s.pending...)
			s.pending = nil
			return s.written, errHalted, true
		case errors.Is(rerr, os.ErrDeadlineExceeded):
			continue // a halt's wake-up, the halt withdrawn meanwhile
		case rerr != nil:
			return s.written, closedAsErrClosed(rerr), true
		case s.stalled:
			// The reader made no progress for the whole timeout. What a
			// read had taken but not delivered is lost with the rest.
			s.stalled, s.armed, s.stallAt = false, false, time.Time{}
			if n := len(s.pending); n > 0 {
				stall.dropped.Add(uint64(n))
				s.pending = nil
			}
			s.releaseBuf()
			moved, err := stall.discardUntilDrained(dst, src, dstRC, h)
			s.written += moved
			if err != nil {
				if errors.Is(err, io.EOF) {
					return s.written, nil, true
				}
				if errors.Is(err, errHalted) {
					return s.written, err, true
				}
				return s.written, closedAsErrClosed(err), true
			}
		case s.err != nil:
			return s.written, closedAsErrClosed(s.err), true
		default:
			return s.written, nil, true // every writer of src is gone
		}
	}
}

// splicer is one relayed stream between two pipes. Its callbacks run inside
// the RawConn waits that hold both files' descriptors: srcReady whenever src
// may have data, dstReady (nested in it) whenever dst may have room.
type splicer struct {
	dst     *os.File
	dstRC   syscall.RawConn
	stall   *stallPolicy
	written int64

	sfd      int     // src's descriptor, for dstReady
	dfd      int     // dst's descriptor, inside dstReady
	buf      *[]byte // a chunk buffer, held while pending is not empty
	pending  []byte  // read from src, not yet written to dst
	bulk     bool    // the last read filled the buffer: splice what follows
	noSplice bool    // the kernel refused splice for this pair: copy only
	wantSrc  bool    // src is empty: wait for src
	done     bool    // end of file, or err
	err      error
	stalled  bool      // dst stayed full for the stall timeout
	armed    bool      // dst's write deadline runs (dst was found full)
	stallAt  time.Time // when it runs out (zero: not armed)
	halt     *halter

	onSrc, onDst func(uintptr) bool // the two callbacks, bound once
}

func (s *splicer) srcReady(sfd uintptr) bool {
	s.sfd = int(sfd)
	if s.halting() {
		return true
	}
	for {
		werr := s.dstRC.Write(s.onDst)
		if werr == nil {
			break
		}
		if s.halting() {
			return true
		}
		if s.armed {
			s.stallAt = s.stall.readerTook(s.dstRC, s.stallAt) // a reader no write shows: wait on
			s.stallAt = s.stall.prolong(s.stallAt)             // held for a returning reader: wait on
		}
		if !haltWakeup(werr, s.stallAt) {
			if errors.Is(werr, os.ErrDeadlineExceeded) {
				s.stalled = true // the stall clock ran out
			} else {
				s.err = werr
			}
			return true
		}
		// A halt's wake-up, the halt withdrawn meanwhile, or a held stall
		// clock: wait on, with the stall clock's deadline (which the
		// halt's end cleared).
		_ = s.dst.SetWriteDeadline(s.stallAt)
	}
	if s.wantSrc && !s.done {
		s.wantSrc = false
		return false // wait until src has data
	}
	return true
}

// dstReady moves what it can; it returns true to wait for src (or stop),
// false to wait until dst has room.
func (s *splicer) dstReady(dfd uintptr) bool {
	s.dfd = int(dfd)
	for {
		if s.halting() {
			return true // between two chunks: what is pending is carried
		}
		switch {
		case len(s.pending) > 0:
			if !s.writePending() {
				s.waitDst()
				return false
			}
		case s.bulk && !s.noSplice:
			switch s.spliceSome() {
			case srcNotReady:
				s.bulk = false
				return s.waitSrc()
			case dstNotReady:
				s.waitDst()
				return false
			case srcAtEOF:
				s.done = true
			}
		default:
			s.readChunk()
			if s.wantSrc {
				return s.waitSrc()
			}
		}
		if s.done {
			return true
		}
	}
}

// readChunk reads what src has, up to one buffer, into pending.
func (s *splicer) readChunk() {
	if s.buf == nil {
		s.buf = chunkBufs.Get().(*[]byte)
	}
	for {
		n, err := rawRead(s.sfd, *s.buf)
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN:
			s.releaseBuf()
			s.wantSrc = true
		case err != nil:
			s.err, s.done = err, true
		case n == 0:
			s.done = true // every writer of src is gone
		default:
			s.pending = (*s.buf)[:n]
			s.bulk = n == len(*s.buf)
			// wantSrc means "src said EAGAIN": never left set with bytes
			// in hand, or the relay would wait for src holding them.
			s.wantSrc = false
		}
		return
	}
}

// writePending writes what a read left; false when dst is full.
func (s *splicer) writePending() bool {
	for len(s.pending) > 0 {
		n, err := rawWrite(s.dfd, s.pending)
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN:
			return false
		case err != nil:
			s.err, s.done = err, true
			return true
		}
		s.pending = s.pending[n:]
		s.progressed(int64(n))
	}
	// Read on until src says EAGAIN, even after a short read: the poller
	// is edge-triggered, and src may have reached end of file (or been
	// written again) since that read, with no edge still to come. The
	// last writer's close can even come before the read that returned the
	// final bytes: its hang-up's edge was taken along with theirs.
	s.releaseBuf()
	return true
}

// spliceSome splices until one side is not ready and says which.
func (s *splicer) spliceSome() pipeState {
	for {
		n, err := spliceNow(s.sfd, s.dfd)
		switch {
		case err == unix.EINTR:
			continue
		case err == nil && n == 0:
			return srcAtEOF
		case err == nil:
			s.progressed(n)
		case err == unix.EINVAL:
			s.noSplice = true // copy from now on
			return bothReady
		case err != unix.EAGAIN:
			s.err, s.done = err, true
			return bothReady
		}
		// splice cannot tell an empty src from a full dst (both are
		// EAGAIN), and an edge-triggered wait on the wrong side would sleep
		// forever: ask the kernel.
		if st := readinessNow(s.sfd, s.dfd); st != bothReady {
			return st
		}
	}
}

// halting is the relay's stop check: a halt asked for is carried out from
// here (halter.commit).
func (s *splicer) halting() bool { return s.halt != nil && s.halt.commit() }

// haltAsked reports a halt asked for, without acting on it.
func (s *splicer) haltAsked() bool { return s.halt != nil && s.halt.requested() }

// waitSrc asks for a wait on src; it returns dstReady's true.
func (s *splicer) waitSrc() bool {
	s.wantSrc = true
	return true
}

// waitDst starts the stall clock before a wait for dst: the reader is
// behind, and from now on its time counts. An armed clock's deadline is set
// again: a halt that was withdrawn cleared it when it ended. During a halt
// the halt's own deadline stays, to wake the relay.
func (s *splicer) waitDst() {
	if !s.stall.enabled() || s.haltAsked() {
		return
	}
	if !s.armed {
		s.stallAt = time.Now().Add(s.stall.timeout)
		s.armed = true
		s.stall.armedOn(s.dstRC)
	}
	_ = s.dst.SetWriteDeadline(s.stallAt)
}

// progressed accounts for n bytes delivered: the reader took data, and the
// stall clock stops (a halt's deadline, if one is asked for, stays).
func (s *splicer) progressed(n int64) {
	s.written += n
	s.stall.progressed(n)
	if s.armed {
		s.stall.readerProgressed()
		if !s.haltAsked() {
			_ = s.dst.SetWriteDeadline(time.Time{})
		}
		s.armed, s.stallAt = false, time.Time{}
	}
}

func (s *splicer) releaseBuf() {
	if s.buf != nil && len(s.pending) == 0 {
		chunkBufs.Put(s.buf)
		s.buf = nil
	}
}

// spliceNow is one non-blocking splice(2) between two pipes. It is issued as
// a raw system call: it never blocks, so the scheduler's syscall bookkeeping
// (which also wakes the runtime's monitor thread from its idle sleep on every
// chunk of an otherwise idle shim) buys nothing.
func spliceNow(in, out int) (int64, error) {
	r, _, e := unix.RawSyscall6(unix.SYS_SPLICE, uintptr(in), 0, uintptr(out), 0, spliceChunk,
		unix.SPLICE_F_NONBLOCK|unix.SPLICE_F_MOVE)
	if e != 0 {
		return 0, e
	}
	return int64(r), nil
}

type pipeState int

const (
	bothReady pipeState = iota
	srcNotReady
	srcAtEOF
	dstNotReady
)

// readinessNow polls both pipes without waiting (a raw ppoll with a zero
// timeout, see spliceNow). splice checks the output's room before the
// input's end, so EAGAIN can also hide end of file.
func readinessNow(src, dst int) pipeState {
	fds := [2]unix.PollFd{{Fd: int32(src), Events: unix.POLLIN}, {Fd: int32(dst), Events: unix.POLLOUT}}
	var zero unix.Timespec
	for {
		_, _, e := unix.RawSyscall6(unix.SYS_PPOLL, uintptr(unsafe.Pointer(&fds[0])), uintptr(len(fds)),
			uintptr(unsafe.Pointer(&zero)), 0, 0, 0)
		if e != unix.EINTR {
			break
		}
	}
	in, out := fds[0].Revents, fds[1].Revents
	switch {
	case in&unix.POLLIN == 0 && in&unix.POLLHUP != 0:
		return srcAtEOF
	case in&unix.POLLIN == 0:
		return srcNotReady
	case out&(unix.POLLOUT|unix.POLLERR) == 0:
		return dstNotReady
	}
	return bothReady
}

// closedAsErrClosed gives a RawConn error the meaning file methods give it:
// RawConn waits return the runtime's unexported "use of closed file" error
// as it is, where File methods wrap it as os.ErrClosed.
func closedAsErrClosed(err error) error {
	if err != nil && err.Error() == "use of closed file" {
		return os.ErrClosed
	}
	return err
}
