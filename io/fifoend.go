package io

import (
	"errors"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// endOfStream closes an output whose stream has ended (its relay is done).
// A client FIFO may keep its ends open a while: see clientFIFO.endOfStream.
func endOfStream(dst output) {
	if f, ok := dst.(*clientFIFO); ok {
		f.endOfStream()
		return
	}
	dst.Close()
}

// lingerPoll is how often a FIFO whose stream ended with bytes unread and
// no client reader looks whether the client has come back and read them.
var lingerPoll = 100 * time.Millisecond

// endOfStream is Close for the end of the stream written through f, except
// when bytes still wait in the FIFO and no client has it open for reading:
// containerd was down when the process wrote its last lines and exited
// (CRI's reader is in containerd; it opens the FIFO again in its recovery
// after a restart). The bytes in a FIFO live only while some end is open,
// and a client reader opened with no writer waits for one for ever
// (containerd's FIFO library opens in blocking mode), so the shim's write
// end stays open until the client has read the FIFO empty, whose reader
// then sees end of file, or until Close (the task's Delete). With a client
// reader there, f closes at once, as it always did: that reader keeps the
// bytes, and its end of file is not delayed. The stock shim closes at once
// in both cases, and the output is lost.
func (f *clientFIFO) endOfStream() {
	f.mu.Lock()
	last := !f.closed && f.extraUsers == 0
	f.mu.Unlock()
	if !last || !f.unreadWithoutReader() {
		_ = f.Close() // counts one user down, as before
		return
	}
	go func() {
		tick := time.NewTicker(lingerPoll)
		defer tick.Stop()
		for {
			select {
			case <-f.released: // closed meanwhile (Close)
				return
			case <-tick.C:
			}
			if f.queuedForClient() == 0 {
				_ = f.Close()
				return
			}
		}
	}()
}

// unreadWithoutReader reports whether bytes wait in the FIFO while no reader
// but the shim's own has it open. It closes that reader to find out (a
// write end opened without waiting fails only when there is no reader at
// all): the write end keeps the bytes, and no relay writes any more.
func (f *clientFIFO) unreadWithoutReader() bool {
	select {
	case <-f.opened:
	default:
		return false // never attached: nothing was written
	}
	if f.w == nil {
		return false
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.keep == nil || queuedIn(f.keep) == 0 {
		return false
	}
	f.keep.Close()
	f.keep = nil
	probe, err := os.OpenFile(f.viaHandle(), unix.O_WRONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err == nil {
		probe.Close()
		return false
	}
	return errors.Is(err, unix.ENXIO)
}

// queuedForClient is how many bytes wait in the FIFO, read through its
// write end (the shim's reader is closed while it lingers).
func (f *clientFIFO) queuedForClient() uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return 0
	}
	return queuedIn(f.w)
}
