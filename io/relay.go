package io

import (
	"errors"
	"io"
	"os"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// spliceChunk is the most one splice(2) call may move. The kernel caps a call
// at what the pipes hold (64 KiB by default), so this only bounds the request.
const spliceChunk = 1 << 20

// Pipes start at the kernel's default size (64 KiB on Linux). A stream that
// keeps filling its pipe is a bulk stream: after fullSplicesToGrow splices
// that each emptied a full pipe, both of its pipes grow to bulkPipeSize, so a
// wake-up moves up to 16 times more. Only such streams get bigger pipes,
// because pipe sizes count against the owning user's pipe-user-pages-soft
// budget, and past it the kernel gives new pipes of unprivileged processes
// of that uid (container processes running as root among them) a single
// page. Data pages are used only while bytes sit in the pipe.
//
// A grown stream that then trickles (smallSplicesToShrink splices in a row
// that each moved less than the default size) shrinks back, so a burst at
// start-up does not hold the budget for the container's whole life.
const (
	bulkPipeSize         = 1 << 20 // the default /proc/sys/fs/pipe-max-size
	fullSplicesToGrow    = 4
	smallSplicesToShrink = 64
)

// copyBufSize is the buffer of the fallback copy, used when a side is not a
// pipe (a regular file behind file:// or a plain path).
const copyBufSize = 32 << 10

var copyBufs = sync.Pool{New: func() any { b := make([]byte, copyBufSize); return &b }}

// relay moves bytes from src to dst until src reaches end of file. When both
// are pipes or FIFOs the bytes move by splice(2) and never enter user space;
// otherwise they go through one pooled buffer.
func relay(dst, src *os.File, stall *stallPolicy) (int64, error) {
	if isPipe(src) && isPipe(dst) {
		if n, err, ok := splicePipes(dst, src, stall); ok {
			return n, err
		}
	}
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	// The wrapper hides dst's ReadFrom, so CopyBuffer really uses our buffer.
	return io.CopyBuffer(countingWriter{dst, stall}, src, *bp)
}

type writerOnly struct{ io.Writer }

// countingWriter reports each write's progress to the relay's policy.
type countingWriter struct {
	w     io.Writer
	stall *stallPolicy
}

func (c countingWriter) Write(b []byte) (int, error) {
	n, err := c.w.Write(b)
	c.stall.progressed(int64(n))
	return n, err
}

// isPipe reports whether f is a pipe or FIFO. It looks through SyscallConn:
// f.Fd() would switch a pipe from os.Pipe back to blocking mode, which
// takes it out of the poller's hands (and disables deadlines).
func isPipe(f *os.File) bool {
	rc, err := f.SyscallConn()
	if err != nil {
		return false
	}
	var st unix.Stat_t
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = unix.Fstat(int(fd), &st) }); err != nil || serr != nil {
		return false
	}
	return st.Mode&unix.S_IFMT == unix.S_IFIFO
}

// splicePipes splices src into dst, waiting for readiness through Go's
// network poller so no thread blocks. Both files must be registered with the
// poller, as every pipe from os.Pipe and every FIFO from os.OpenFile is.
// ok is false when the kernel refuses splice for this pair before anything moved.
func splicePipes(dst, src *os.File, stall *stallPolicy) (written int64, err error, ok bool) {
	srcRC, err1 := src.SyscallConn()
	dstRC, err2 := dst.SyscallConn()
	if err1 != nil || err2 != nil {
		return 0, nil, false
	}
	growth := pipeGrowth{capacity: pipeSize(srcRC)}
	// The stall clock runs only while the relay waits for room in dst: it is
	// armed when dst is found full and disarmed by progress. (Armed before
	// the wait for the process's output, it would expire during a quiet
	// spell and take the next write for a stalled reader.)
	armed := false
	for {
		var n int64
		var serr error
		srcEmpty := false
		rerr := srcRC.Read(func(sfd uintptr) bool {
			srcEmpty = false
			werr := dstRC.Write(func(dfd uintptr) bool {
				for {
					n, serr = unix.Splice(int(sfd), nil, int(dfd), nil, spliceChunk,
						unix.SPLICE_F_NONBLOCK|unix.SPLICE_F_MOVE)
					if serr == unix.EINTR {
						continue
					}
					if serr != unix.EAGAIN {
						return true
					}
					// EAGAIN means src was empty or dst full at that moment;
					// either may have changed since. Ask the kernel about both
					// now and wait only on a side that is really not ready:
					// an edge-triggered wait on the wrong side sleeps forever.
					switch readiness(int(sfd), int(dfd)) {
					case srcAtEOF:
						n, serr = 0, nil
						return true
					case srcNotReady:
						srcEmpty = true
						return true // wait for src instead
					case dstNotReady:
						if stall.enabled() && !armed {
							// Safe inside the wait: deadlines do not take
							// the write lock this callback runs under.
							_ = dst.SetWriteDeadline(time.Now().Add(stall.timeout))
							armed = true
						}
						return false // wait until dst drains
					}
					// Both ready now: try again.
				}
			})
			if werr != nil {
				serr = werr
				return true
			}
			return !srcEmpty
		})
		if rerr != nil {
			return written, closedAsErrClosed(rerr), true
		}
		switch {
		case serr == nil && n == 0:
			return written, nil, true // every writer of src is gone
		case serr == nil:
			written += n
			stall.progressed(n)
			if armed {
				_ = dst.SetWriteDeadline(time.Time{})
				armed = false
			}
			switch growth.observe(n) {
			case grow:
				setPipeSize(srcRC, bulkPipeSize)
				setPipeSize(dstRC, bulkPipeSize)
			case shrink:
				// Refused (EBUSY) while more than the default size is
				// queued; then the stream counts as grown and tries again
				// after the next run of small splices.
				setPipeSize(srcRC, int(growth.capacity))
				setPipeSize(dstRC, int(growth.capacity))
				if pipeSize(srcRC) > growth.capacity || pipeSize(dstRC) > growth.capacity {
					growth.grown = true
				}
			}
		case errors.Is(serr, os.ErrDeadlineExceeded) && stall.enabled():
			// The reader made no progress for the whole timeout.
			armed = false // discardUntilDrained clears the deadline
			moved, err := stall.discardUntilDrained(dst, src, dstRC)
			written += moved
			if err != nil {
				if errors.Is(err, io.EOF) {
					return written, nil, true
				}
				return written, closedAsErrClosed(err), true
			}
		case errors.Is(serr, unix.EINVAL) && written == 0:
			return 0, nil, false
		default:
			return written, closedAsErrClosed(serr), true
		}
	}
}

type pipeState int

const (
	bothReady pipeState = iota
	srcNotReady
	srcAtEOF
	dstNotReady
)

// readiness polls both pipes without waiting. splice checks the output's
// room before the input's end, so EAGAIN can also hide end of file.
func readiness(src, dst int) pipeState {
	fds := []unix.PollFd{{Fd: int32(src), Events: unix.POLLIN}, {Fd: int32(dst), Events: unix.POLLOUT}}
	for {
		if _, err := unix.Poll(fds, 0); err != unix.EINTR {
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

// pipeGrowth decides when a spliced stream has earned bigger pipes, and when
// it should give them back.
type pipeGrowth struct {
	capacity int64 // the source pipe's default size; 0 when unknown (never grow)
	full     int   // splices that moved a whole default-size pipe, since the last resize
	small    int   // since growing: splices in a row that moved less than that
	grown    bool
}

type resize int

const (
	keep resize = iota
	grow
	shrink
)

// observe records a splice of n bytes and says whether to resize the pipes.
func (g *pipeGrowth) observe(n int64) resize {
	if g.capacity <= 0 || g.capacity >= bulkPipeSize {
		return keep
	}
	if !g.grown {
		if n < g.capacity {
			return keep
		}
		if g.full++; g.full < fullSplicesToGrow {
			return keep
		}
		g.grown, g.full, g.small = true, 0, 0
		return grow
	}
	if n >= g.capacity {
		g.small = 0
		return keep
	}
	if g.small++; g.small < smallSplicesToShrink {
		return keep
	}
	g.grown, g.small = false, 0
	return shrink
}

// pipeSize returns a pipe's buffer size in bytes, or 0 if it cannot tell.
func pipeSize(rc syscall.RawConn) int64 {
	var size int
	var serr error
	if err := rc.Control(func(fd uintptr) { size, serr = unix.FcntlInt(fd, unix.F_GETPIPE_SZ, 0) }); err != nil || serr != nil {
		return 0
	}
	return int64(size)
}

// setPipeSize asks for a pipe of size bytes. A refusal (a lower
// pipe-max-size, the user's pipe budget spent) leaves the pipe as it was,
// which is only slower.
func setPipeSize(rc syscall.RawConn, size int) {
	_ = rc.Control(func(fd uintptr) { _, _ = unix.FcntlInt(fd, unix.F_SETPIPE_SZ, size) })
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
