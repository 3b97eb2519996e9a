package io

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/fifo"
	"golang.org/x/sys/unix"
)

func (p *Pipes) startOutput(dst output, stream string) (*os.File, error) {
	// A second stream on the same client FIFO (streamFIFOs) writes
	// through a duplicate of its own (ownEnd).
	n := len(p.clientQueues)
	pr := &pipeRelay{stream: stream, out: dst, sharer: n > 0 && p.clientQueues[n-1] == dst}
	w, err := p.startRelay(stream, p.outputRun(pr, nil, false), func() { endOfStream(dst) })
	if err != nil {
		dst.Close()
		return nil, err
	}
	pr.src = p.ownQueues[len(p.ownQueues)-1]
	p.relays = append(p.relays, pr)
	// After the read end: Close closes newest first, the destination before
	// the source its relay holds.
	p.toClose = append(p.toClose, dst) // once per relay writing through it (streamFIFOs)
	if !pr.sharer {
		p.clientQueues = append(p.clientQueues, dst)
	}
	return w, nil
}

// startFileOutput relays one stream into a (shared) log file.
func (p *Pipes) startFileOutput(rf *rotatingFile, stream string) (*os.File, error) {
	rf.mu.Lock()
	rf.users++
	rf.mu.Unlock()
	pr := &pipeRelay{stream: stream, log: rf}
	w, err := p.startRelay(stream, p.fileRun(pr, nil), rf.release)
	if err != nil {
		rf.release()
		return nil, err
	}
	pr.src = p.ownQueues[len(p.ownQueues)-1]
	p.relays = append(p.relays, pr)
	return w, nil
}

// fileRun is a file:// relay's body, reading carry first.
func (p *Pipes) fileRun(pr *pipeRelay, carry []byte) func(src *os.File) error {
	pr.h = newHalter(carry)
	return func(src *os.File) error {
		var err error
		if pr.log.opts.CRI {
			err = pr.log.relayCRI(src, pr.stream, &p.moved, &p.dropped, pr.h)
		} else {
			err = pr.log.relayRaw(src, &p.moved, &p.dropped, pr.h)
		}
		pr.h.finish(err)
		return err
	}
}

// openOutput opens the client's end of an output stream: a plain file, or a
// FIFO written to once a reader is there (see clientFIFO; attachTimeout
// bounds the wait for one).
func openOutput(uri, stream string, attachTimeout time.Duration) (output, error) {
	if strings.Contains(uri, "://") && !strings.HasPrefix(uri, "fifo://") {
		return nil, fmt.Errorf("%s %q: unsupported stdio scheme: %w", stream, uri, errdefs.ErrNotImplemented)
	}
	path, err := fifoPath(uri, stream)
	if err != nil {
		return nil, err
	}
	// A missing path is the client's mistake; never create it (only file://
	// asks for a file to be made).
	if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("%s %q: %w", stream, path, classify(err))
	}
	isFifo, err := fifo.IsFifo(path)
	if err != nil {
		return nil, fmt.Errorf("%s %q: %w", stream, path, classify(err))
	}
	if !isFifo {
		// An existing plain file: append, as containerd's own shim does.
		f, err := os.OpenFile(path, unix.O_WRONLY|unix.O_APPEND|unix.O_CLOEXEC, 0)
		if err != nil {
			return nil, fmt.Errorf("%s: open %s: %w", stream, path, classify(err))
		}
		return readyFile{f}, nil
	}
	return openClientFIFO(path, stream, attachTimeout)
}

// openLogFile opens (creating it and its directory if needed) a file://
// log for appending. Every file:// log is made the same way, whether a
// terminal's, a raw or CRI-format one, or a rotation's fresh file.
func openLogFile(path string) (*os.File, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("log directory for %s: %w", path, err)
	}
	// Non-blocking: a FIFO (one that a format or rotation option kept from
	// being opened as a client's, see namesFIFO) without a reader fails
	// at once (ENXIO) instead of blocking the request in open(2). For a
	// regular file the flag changes nothing.
	f, err := os.OpenFile(path, unix.O_WRONLY|unix.O_APPEND|unix.O_CREAT|unix.O_CLOEXEC|unix.O_NONBLOCK, 0o640)
	if err != nil {
		return nil, fmt.Errorf("open log %s: %w", path, classify(err))
	}
	return f, nil
}

// Dropped returns how many output bytes were discarded because the reader
// stalled (see DefaultStallTimeout).
func (p *Pipes) Dropped() uint64 { return p.dropped.Load() }

// Moved returns how many output bytes reached the client or the log so far.
func (p *Pipes) Moved() uint64 { return p.moved.Load() }

// Queued returns the output bytes waiting in the process's pipes for the
// shim to move, and those waiting in the client's FIFOs for the client to
// read: a full client FIFO means a slow reader. Zero once the files are
// closed. (Output relays only; a terminal's bytes are not counted.)
func (p *Pipes) Queued() (own, client uint64) {
	for _, f := range p.ownQueues {
		own += queuedIn(f)
	}
	for _, o := range p.clientQueues {
		client += o.queued()
	}
	return own, client
}

// queuedIn reads a pipe's fill without switching it to blocking mode.
func queuedIn(f *os.File) uint64 {
	rc, err := f.SyscallConn()
	if err != nil {
		return 0
	}
	return uint64(fifoQueued(rc))
}
