package io

import (
	"errors"
	"os"
	"sync/atomic"
	"time"
)

// errHalted ends a relay that was halted (for an in-place upgrade): its
// files stay open and its undelivered bytes are in its halter's carry.
var errHalted = errors.New("relay halted")

// haltRetry is how often Halt renews the deadlines that wake a halting
// relay: the relay may clear a write deadline (progress) just as Halt set it.
const haltRetry = 5 * time.Millisecond

// halter stops one pipe-to-pipe relay between two chunks, so that a
// successor can take its files over: bytes it had read but not written go to
// carry (and a relay started with a carry writes it first).
//
// Locking: state moves by compare-and-swap between Halt (request, and
// withdraw when the relay did not stop in time) and the relay (commit, at a
// point where it can return errHalted); carry and done are the relay's until
// done is closed, then Halt's caller's.
type halter struct {
	state atomic.Int32 // haltNone, haltRequested or haltCommitted
	ended atomic.Bool  // the relay finished its stream (set before done closes)
	carry []byte
	// discarding: the relay was discarding for a stalled reader when it
	// halted (stall.go); the next one goes on discarding until it reads.
	discarding bool
	// lastIn: a terminal's input relay, the last byte it wrote to the pty
	// (0: none), so that a successor ends input after a partial line
	// (console.go) as the relay would have.
	lastIn byte
	// eofPending: a terminal's input relay read the end of its input and
	// its carry holds the end-of-file characters still to be written; a
	// successor writes them and reads no more input (console.go).
	eofPending bool
	done       chan struct{} // closed when the relay returned: halted, or ended
	// asked gets a token when a halt is asked for: it wakes a relay from a
	// wait no deadline ends (a paced log's). A token left by a withdrawn
	// halt only wakes such a wait early once.
	asked chan struct{}
}

// finish records how the relay returned and releases a waiting halt.
func (h *halter) finish(err error) {
	if !errors.Is(err, errHalted) {
		h.ended.Store(true)
	}
	close(h.done)
}

// A halter's states. A request the relay has not acted on can be withdrawn;
// once the relay commits, it returns errHalted and the halt stands: a
// withdrawal racing it must not leave a relay that returned as if it went on.
const (
	haltNone int32 = iota
	haltRequested
	haltCommitted
)

// requested reports whether a halt is asked for or under way, without
// acting on it (for decisions other than stopping).
func (h *halter) requested() bool { return h.state.Load() != haltNone }

// commit is the relay's check at a point where it can stop: true when a
// halt is asked for, which the relay then carries out (returns errHalted).
func (h *halter) commit() bool {
	switch h.state.Load() { // a plain load first: the relay asks on every chunk
	case haltNone:
		return false
	case haltCommitted:
		return true
	}
	return h.state.CompareAndSwap(haltRequested, haltCommitted) || h.state.Load() == haltCommitted
}

// withdraw takes back a request the relay has not acted on, and reports
// whether it did.
func (h *halter) withdraw() bool { return h.state.CompareAndSwap(haltRequested, haltNone) }

func newHalter(carry []byte) *halter {
	return &halter{carry: carry, done: make(chan struct{}), asked: make(chan struct{}, 1)}
}

// stoppedHalter stands for a relay a successor does not run again (its
// stream had ended, or the terminal's output had): stopped from the start
// and holding the state handed over, so that a halt finds it stopped and an
// export hands the same state on.
func stoppedHalter(carry []byte, ended bool, lastIn byte, eofPending bool) *halter {
	h := &halter{carry: carry, lastIn: lastIn, eofPending: eofPending, done: make(chan struct{}), asked: make(chan struct{}, 1)}
	h.ended.Store(ended)
	close(h.done)
	return h
}

// stopped reports whether the relay has returned (halted, or its stream
// ended). If not, a halt asked for is withdrawn and the relay goes on by
// itself; unless it has just committed to the halt, and then it is waited
// for (it returns at once). A relay never asked to halt goes on.
func (h *halter) stopped() bool {
	select {
	case <-h.done:
		return true
	default:
	}
	// Only a halt request can lead to a commit: a halter at haltNone stays
	// there until the next halt.
	if h.withdraw() || h.state.Load() == haltNone {
		select {
		case <-h.asked: // the request's wake-up, if nobody took it
		default:
		}
		return false
	}
	<-h.done
	return true
}

// takeCarry hands the relay the bytes it must deliver first, once.
func (h *halter) takeCarry() []byte {
	c := h.carry
	h.carry = nil
	return c
}

// haltedIn reports whether a write to w that failed was stopped by a halt;
// then what w had not written yet becomes the carry.
func (h *halter) haltedIn(w *rawFile) bool {
	if !h.commit() {
		return false
	}
	h.carry = append([]byte(nil), w.buf...)
	return true
}

// haltWakeup reports whether err, which ended a write the relay was
// waiting in, is a deadline a halt set to wake it, the halt withdrawn since
// (the relay's commit said no): the write goes on. own is the relay's own
// deadline for that wait (the stall clock; zero: none): a deadline error at
// or after it is the relay's own, not a halt's.
func haltWakeup(err error, own time.Time) bool {
	return errors.Is(err, os.ErrDeadlineExceeded) && (own.IsZero() || time.Now().Before(own))
}

// request asks the relay to stop at its next chance, without waiting (a
// request standing, or a halt the relay committed to, stays as it is).
func (h *halter) request() {
	h.state.CompareAndSwap(haltNone, haltRequested)
	select {
	case h.asked <- struct{}{}:
	default: // a token is there already
	}
}

// halt asks the relay between src and dst to stop, waking it from any wait
// with past deadlines, and waits until it has (or timeout). The deadlines
// are cleared again before it returns.
func (h *halter) halt(src, dst *os.File, timeout time.Duration) bool {
	h.request()
	defer func() {
		_ = src.SetReadDeadline(time.Time{})
		if dst != nil {
			_ = dst.SetWriteDeadline(time.Time{})
		}
	}()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(haltRetry)
	defer tick.Stop()
	for {
		now := time.Now()
		_ = src.SetReadDeadline(now)
		if dst != nil { // nil: a terminal whose client never came
			_ = dst.SetWriteDeadline(now)
		}
		select {
		case <-h.done:
			return true
		case <-tick.C:
			if now.After(deadline) {
				return false
			}
		}
	}
}
