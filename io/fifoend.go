package io

import (
	"errors"
	"fmt"
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
	go f.linger()
}

// linger closes f once its next reader has read the FIFO empty, or returns
// when f is closed meanwhile (Close).
func (f *clientFIFO) linger() {
	tick := time.NewTicker(lingerPoll)
	defer tick.Stop()
	for {
		select {
		case <-f.released:
			return
		case <-tick.C:
		}
		if f.queued() == 0 {
			_ = f.Close()
			return
		}
	}
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
	f.lingering = errors.Is(err, unix.ENXIO)
	return f.lingering
}

// LingeringState is a client FIFO whose stream has ended while its bytes
// wait for the next reader (the write end and the O_PATH handle): an
// in-place upgrade hands it over, and the successor holds the write end on
// until that reader has read them (layout 14; an older successor is not
// given it, and the bytes are lost at the switch, as they were before).
type LingeringState struct {
	Stream string `json:"stream"`
	FIFO   int    `json:"fifo"`
	Handle int    `json:"handle"`
}

// exportLingering keeps f's write end and handle if f lingers; nil if it
// does not, or was closed meanwhile. mu is held while the ends are
// duplicated, so a Close running at the same time (the reader came and
// read) waits and closes them after.
func (f *clientFIFO) exportLingering(stream string, keep func(*os.File) (int, error)) (*LingeringState, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.lingering || f.closed {
		return nil, nil
	}
	l := &LingeringState{Stream: stream}
	var err error
	if l.FIFO, err = keep(f.w); err == nil {
		l.Handle, err = keep(f.handle)
	}
	return l, err
}

// exportLingering describes the FIFOs that linger: those of p's ended
// relays (one shared by stdout and stderr once) and those a predecessor
// handed over.
func (p *Pipes) exportLingering(keep func(*os.File) (int, error)) ([]LingeringState, error) {
	var out []LingeringState
	seen := map[*clientFIFO]bool{}
	add := func(stream string, f *clientFIFO) error {
		if seen[f] {
			return nil
		}
		seen[f] = true
		l, err := f.exportLingering(stream, keep)
		if err != nil {
			return fmt.Errorf("%s fifo lingering for its reader: %w", stream, err)
		}
		if l != nil {
			out = append(out, *l)
		}
		return nil
	}
	for _, r := range p.relays {
		if f, ok := r.out.(*clientFIFO); ok && r.h.ended.Load() {
			if err := add(r.stream, f); err != nil {
				return nil, err
			}
		}
	}
	for stream, f := range p.adoptedLingering {
		if err := add(stream, f); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// importLingering holds a handed-over lingering FIFO's write end until its
// next reader has read it empty, or until p's Close.
func (p *Pipes) importLingering(l LingeringState, get adoptFunc) {
	f := newClientFIFO(get(l.Handle, l.Stream+" fifo handle", held))
	f.w = get(l.FIFO, l.Stream+" fifo", held) // only held: nothing writes it
	close(f.opened)
	f.lingering = true
	p.toClose = append(p.toClose, f)
	p.clientQueues = append(p.clientQueues, f) // its bytes wait for the client
	if p.adoptedLingering == nil {
		p.adoptedLingering = map[string]*clientFIFO{}
	}
	p.adoptedLingering[l.Stream] = f
	go f.linger()
}
