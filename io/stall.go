package io

import (
	"errors"
	"log/slog"
	"os"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// DefaultStallTimeout is how long a process's output may wait for a reader
// that makes no progress (the client went away, or containerd is down and
// nobody drains the FIFO) before the shim stops holding the process back and
// discards what it writes, counting it, until a reader drains again. While a
// reader makes any progress, output is never dropped: back-pressure applies
// as usual. containerd's own shim waits forever, freezing the container.
const DefaultStallTimeout = 15 * time.Second

// stallRecheck is how often a stall clock held while the reader's owner is
// down asks again.
const stallRecheck = time.Second

// DefaultReturnGrace is the least time a reader whose owner is back gets to
// read again before the stall clock runs out, whatever a short stall timeout
// says. CRI reopens a container's FIFOs during its recovery, which runs
// beside containerd's start: all pods first (up to 10 s for a slow one),
// then a State call of up to 2 s per container, so up to about 12 s after
// containerd's socket answers, more on a loaded node.
const DefaultReturnGrace = 30 * time.Second

// newStallPolicy is the stall policy of one of p's output relays.
func (p *Pipes) newStallPolicy(stream string) *stallPolicy {
	return &stallPolicy{stream: stream, timeout: p.stallTimeout, dropped: &p.dropped, moved: &p.moved,
		owner: p.readerOwner, grace: p.returnGrace}
}

// stallPolicy is an output relay's answer to a stalled reader. It belongs to
// the relay's goroutine.
type stallPolicy struct {
	stream  string
	timeout time.Duration // <= 0: wait forever
	dropped *atomic.Uint64
	moved   *atomic.Uint64 // bytes handed to the reader (Drain watches it)
	// owner, if set, tells of the reader's owner (see Env.ReaderOwner);
	// held records that the clock's last run out found it down (its return
	// time may then be unknown: now is taken for it).
	owner func() (down bool, upSince time.Time)
	held  bool
	grace time.Duration // see DefaultReturnGrace
	// fill is the client FIFO's fill when the clock was armed or last
	// started again (armedOn, readerTook).
	fill int
}

func (s *stallPolicy) progressed(n int64) {
	if s != nil && s.moved != nil && n > 0 {
		s.moved.Add(uint64(n))
	}
}

// prolong is asked when the stall clock armed until at may have run out (a
// write's deadline passed). It returns at when the clock has not run out,
// or when it has and discarding is to begin. While the reader's owner
// (containerd) is down, the clock is held instead: the new deadline is a
// recheck soon. For a while after the owner is back (a whole timeout, and
// at least the return grace, from its return), the clock is held too: CRI
// reopens its containers' FIFOs some seconds after containerd is up, and a
// restart quicker than the clock, or one just before the FIFO filled, is a
// restart all the same.
func (s *stallPolicy) prolong(at time.Time) time.Time {
	if s == nil || s.owner == nil || at.IsZero() || time.Now().Before(at) {
		return at
	}
	down, upSince := s.owner()
	now := time.Now() // after the probe, which takes time
	if down {
		if !s.held {
			slog.Warn("output reader stalled while containerd is down; holding output until it reads",
				"stream", s.stream, "stalled_for", s.timeout)
		}
		s.held = true
		return now.Add(stallRecheck)
	}
	back := upSince
	if s.held && (back.IsZero() || back.After(now)) {
		back = now // seen down: back by now at the latest
	}
	s.held = false
	if back.IsZero() {
		return at
	}
	if next := back.Add(max(s.timeout, s.grace)); next.After(now) {
		slog.Info("output reader stalled shortly after containerd came back; waiting for it to read",
			"stream", s.stream, "until", next.Format(time.RFC3339))
		return next
	}
	return at
}

// armedOn records the fill of the FIFO (dst) as the clock is armed.
func (s *stallPolicy) armedOn(dst syscall.RawConn) { s.fill = fifoQueued(dst) }

// readerTook is asked, like prolong and before it, when the clock armed
// until at may have run out. If the reader took bytes from the FIFO (dst)
// since the clock was armed or last started again, the clock starts again
// and the new deadline is returned; otherwise at. No write shows such a
// reader: a full pipe takes a write again only once a whole page (4 KiB) of
// it is free, and a reader taking less than that per stall timeout (a slow
// consumer, a terminal read a line at a time) is reading all the same.
func (s *stallPolicy) readerTook(dst syscall.RawConn, at time.Time) time.Time {
	if s == nil || at.IsZero() || time.Now().Before(at) {
		return at
	}
	fill := fifoQueued(dst)
	if fill >= s.fill {
		return at
	}
	s.fill = fill
	s.readerProgressed()
	return time.Now().Add(s.timeout)
}

// readerProgressed ends a hold: the reader took data.
func (s *stallPolicy) readerProgressed() {
	if s != nil {
		s.held = false
	}
}

func (s *stallPolicy) enabled() bool { return s != nil && s.timeout > 0 }

// discardStarts runs as a relay begins discarding (a variable for a test
// that widens the moment between its stall and its clearing of the clock).
var discardStarts = func() {}

// discardUntilDrained reads the process's output and discards it (counting
// every byte, logging once) until the reader takes data again; it returns
// how many bytes it did hand to the reader, and io.EOF when the process's
// output ended meanwhile. The bytes already waiting in the FIFO are kept.
//
// A halt (h, for an in-place upgrade) ends it with errHalted, the halter
// marked as discarding: the next relay goes on discarding at once.
func (s *stallPolicy) discardUntilDrained(dst, src *os.File, dstRC syscall.RawConn, h *halter) (int64, error) {
	discardStarts()
	_ = dst.SetWriteDeadline(time.Time{})
	slog.Warn("output reader stalled; discarding output until it reads again",
		"stream", s.stream, "stalled_for", s.timeout)
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	var dropped uint64
	defer func() {
		if dropped > 0 {
			slog.Warn("output discarded while the reader stalled", "stream", s.stream, "bytes", dropped,
				"total_dropped", s.dropped.Load())
		}
	}()
	// The reader is back only once the FIFO's queue shrinks: nothing but a
	// reader takes bytes out, and the shim writes none while discarding. (A
	// write merely fitting into leftover room proves nothing.)
	queued := fifoQueued(dstRC)
	for {
		if h != nil && h.commit() {
			h.discarding = true
			return 0, errHalted
		}
		n, err := src.Read(*bp)
		if n > 0 {
			w := s.offer(dstRC, queued, (*bp)[:n])
			dropped += uint64(n - w)
			if w > 0 {
				return int64(w), nil // the reader is back
			}
		}
		if err != nil {
			if h != nil && errors.Is(err, os.ErrDeadlineExceeded) {
				if h.commit() {
					h.discarding = true
					return 0, errHalted
				}
				continue // a halt's wake-up, the halt withdrawn meanwhile
			}
			return 0, err // io.EOF when the process's writers are gone
		}
	}
}

// offer is one chunk of a discarding relay: written, as much as fits and
// without waiting, only if the FIFO behind dstRC holds less than queued (a
// reader took bytes since) or nothing at all; the rest is counted as
// dropped. It returns how many bytes went out: more than 0 means the reader
// is back. An empty FIFO counts although queued may be 0 too: discarding
// began on a full FIFO, so a reader emptied it before queued was measured
// (in the instant after the clock ran out, or during an upgrade's halt,
// after which the next relay measures again).
func (s *stallPolicy) offer(dstRC syscall.RawConn, queued int, b []byte) int {
	w := 0
	if q := fifoQueued(dstRC); q < queued || q == 0 {
		w = writeNonblocking(dstRC, b)
	}
	s.dropped.Add(uint64(len(b) - w))
	if w > 0 {
		s.progressed(int64(w))
	}
	return w
}

// fifoQueued returns how many bytes wait in the pipe behind rc.
func fifoQueued(rc syscall.RawConn) int {
	var n int
	_ = rc.Control(func(fd uintptr) {
		if v, err := unix.IoctlGetInt(int(fd), unix.TIOCINQ); err == nil { // FIONREAD
			n = v
		}
	})
	return n
}

// writeNonblocking writes what fits without waiting.
func writeNonblocking(rc syscall.RawConn, b []byte) int {
	var n int
	_ = rc.Write(func(fd uintptr) bool {
		for {
			w, err := unix.Write(int(fd), b)
			if err == unix.EINTR {
				continue
			}
			if w > 0 {
				n = w
			}
			return true
		}
	})
	return n
}

// terminalStall is the stall policy of a terminal's output relay, which
// writes the pty's output to the client's FIFO with rawFile.write: the
// clock is armed when a write finds the FIFO full and disarmed by any
// progress, as for pipes (splicer.waitDst). When it runs out, output is
// discarded, counted, until the FIFO's queue shrinks: only a reader takes
// bytes out of it.
//
// It belongs to the relay's goroutine; the hooks run inside its writes.
type terminalStall struct {
	policy     *stallPolicy
	dst        *os.File
	dstRC      syscall.RawConn
	w          *rawFile
	armed      bool
	at         time.Time // when the armed clock runs out
	discarding bool
	queued     int // the FIFO's fill when discarding began
}

// newTerminalStall returns the policy for w (dst's writer), or nil when p
// has none (a zero stall timeout: wait forever, as containerd's shim does).
func newTerminalStall(p *Pipes, dst *os.File, w *rawFile) *terminalStall {
	if p.stallTimeout <= 0 {
		return nil
	}
	rc, err := dst.SyscallConn()
	if err != nil {
		return nil
	}
	s := &terminalStall{policy: p.newStallPolicy("terminal"), dst: dst, dstRC: rc, w: w}
	w.full, w.progress = s.arm, s.disarm
	return s
}

// arm runs when a write finds the FIFO full. An armed clock's deadline is
// set again: a halt that was withdrawn cleared it when it ended.
func (s *terminalStall) arm() {
	if !s.armed {
		s.at = time.Now().Add(s.policy.timeout)
		s.armed = true
		s.policy.armedOn(s.dstRC)
	}
	_ = s.dst.SetWriteDeadline(s.at)
}

func (s *terminalStall) disarm() {
	s.policy.readerProgressed()
	if s.armed {
		_ = s.dst.SetWriteDeadline(time.Time{})
		s.armed = false
		s.at = time.Time{}
	}
}

// deadline is when the armed clock runs out (zero: not armed). Asked after
// a write's deadline passed, it first starts the clock again for a reader
// that took bytes no write shows (stallPolicy.readerTook), and moves a
// clock held for a returning reader on (stallPolicy.prolong): the write
// then waits on.
func (s *terminalStall) deadline() time.Time {
	if s.armed {
		s.at = s.policy.readerTook(s.dstRC, s.at)
		s.at = s.policy.prolong(s.at)
	}
	return s.at
}

// stalled reports whether err ended a write because the clock ran out; if
// so, what the write had left is dropped and discarding begins.
func (s *terminalStall) stalled(err error) bool {
	if !s.armed || !errors.Is(err, os.ErrDeadlineExceeded) || time.Now().Before(s.at) {
		return false
	}
	s.disarm()
	lost := uint64(len(s.w.buf))
	s.w.buf = nil
	s.policy.dropped.Add(lost)
	s.discarding = true
	s.queued = fifoQueued(s.dstRC)
	slog.Warn("terminal output reader stalled; discarding output until it reads again",
		"stalled_for", s.policy.timeout)
	return true
}

// discard drops b unless the reader has taken bytes since discarding
// began; then what fits goes out and discarding ends.
func (s *terminalStall) discard(b []byte) {
	if s.policy.offer(s.dstRC, s.queued, b) > 0 {
		s.discarding = false
		slog.Warn("terminal output reader is back", "total_dropped", s.policy.dropped.Load())
	}
}
