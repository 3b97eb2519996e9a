package io

import (
	"sync/atomic"
	"time"
)

// releasePace lifts the rate= pace of the process's file:// logs.
func (p *Pipes) releasePace() {
	for _, l := range p.paced {
		l.release()
	}
}

// Named limits of Drain.
const (
	// DrainIdleTimeout: once the process has exited, output that has not
	// moved for this long is not going to: its reader is gone or stuck.
	// Waiting longer only delays Delete (clients give up after seconds).
	// 1 s cut off a reader that was only slow: `ctr run` in the cgroup v2
	// guest (emulated CPUs) lost its last 90 KB once.
	DrainIdleTimeout = 3 * time.Second
	drainPoll        = 100 * time.Millisecond
	// LoggerEndGrace: a binary:// logger that has read everything the
	// process wrote is given this long to exit by itself before Drain
	// hands it to Close's SIGTERM. Most loggers copy until end of file and
	// then exit; a signal between their last read and their last write
	// would cut off what they were writing. One that waits for SIGTERM
	// (containerd's logging.Run) costs Delete only this.
	LoggerEndGrace = time.Second
	// logRelayEndTimeout bounds Close's wait for a file:// log's relays to
	// write what they hold once their pipes are closed (awaitRelays).
	logRelayEndTimeout = 500 * time.Millisecond
)

// Delivered reports whether the output relays have ended: every byte the
// process (and whatever shares its stdio) wrote has been delivered, or the
// pipes were closed. An upgrade may leave such stdio behind even when it
// could not hand it over.
func (p *Pipes) Delivered() bool {
	p.mu.Lock()
	closed := p.closed
	p.mu.Unlock()
	select {
	case <-p.outputs.done:
		return true
	default:
		return closed
	}
}

// Drain waits until the output relays have delivered everything the process
// wrote (its pipes reached end of file): at most timeout, and no longer than
// DrainIdleTimeout without any progress (a binary:// logger, whose progress
// the shim cannot see, gets the whole timeout). A logger that is still
// running counts as drained LoggerEndGrace after it has read everything
// (loggerHasAll): its exit may only come with Close's SIGTERM. It reports
// whether they finished.
func (p *Pipes) Drain(timeout time.Duration) bool {
	// The process is gone: what is left in its pipes goes out unpaced.
	p.releasePace()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(drainPoll)
	defer tick.Stop()
	// Progress is bytes moved, or the client's FIFOs emptying: a reader
	// slower than a page (4 KiB) per DrainIdleTimeout moves none (see
	// stallPolicy.readerTook).
	last, idleSince := p.moved.Load(), time.Now()
	_, lastFill := p.Queued()
	var hadAll time.Time // when the logger had read everything; zero: not yet
	for {
		select {
		case <-p.outputs.done:
			return true
		case now := <-tick.C:
			if hadAll.IsZero() && p.loggerHasAll() {
				hadAll = now
			}
			if !hadAll.IsZero() && now.Sub(hadAll) >= LoggerEndGrace {
				return true
			}
			if now.After(deadline) {
				return false
			}
			_, fill := p.Queued()
			if cur := p.moved.Load(); cur != last || fill < lastFill {
				last, idleSince = cur, now
			} else if p.logger == nil && now.Sub(idleSince) >= DrainIdleTimeout {
				return false
			}
			lastFill = fill
		}
	}
}

// loggerHasAll reports whether a binary:// logger has been given all the
// process wrote: its pipes have no writer left and nothing queued (the
// shim's held read ends see them). What it does with the bytes is its own
// business until it is stopped, as under the stock shim, which does not
// wait for a logger at Delete at all.
func (p *Pipes) loggerHasAll() bool {
	return p.logger != nil && p.loggerEnds.Load().settled()
}

// Close ends every relay and closes every file. Output not yet delivered is
// dropped, so call Drain first.
func (p *Pipes) Close() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	if p.hold != nil {
		p.hold.release(true) // a no-op once Launched
	}
	p.closeStdinLocked()
	if p.master != nil {
		p.master.Close()
	} else if p.terminal {
		p.outputs.Done() // the console relay that never started
	}
	p.mu.Unlock()
	p.releasePace()
	p.ReleaseRuntimeFiles()
	// Newest first: a relay waits for its destination (added after its
	// source) while holding its source, and closing a file waits for the
	// operations on it to return. Closing the destination first frees both.
	for i := len(p.toClose) - 1; i >= 0; i-- {
		if f, ok := p.toClose[i].(*clientFIFO); ok {
			f.closeForAll() // listed once per relay writing through it
			continue
		}
		if rf, ok := p.toClose[i].(*rotatingFile); ok {
			// Its relays' sources come after it, closed by now: let them
			// write what they hold before the file goes.
			rf.awaitRelays(logRelayEndTimeout)
		}
		p.toClose[i].Close()
	}
	p.stopLogger()
	p.loggerEnds.Load().close()
}

// relayCount counts the output relays still running; the one that brings
// it to zero closes done, so no goroutine waits for them. Open holds one
// count while it starts them.
type relayCount struct {
	n    atomic.Int32
	done chan struct{}
}

func (c *relayCount) Add(n int) { c.n.Add(int32(n)) }

func (c *relayCount) Done() {
	if c.n.Add(-1) == 0 {
		close(c.done)
	}
}
