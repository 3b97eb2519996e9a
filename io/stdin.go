package io

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// openStdinFIFO opens the client's stdin FIFO for reading, and the shim's own
// writer on it. Non-blocking opens never wait for a peer: a FIFO opened for
// reading returns at once, and our writer then has a reader to pair with.
// A path naming a regular file or a device (a tool driving the shim may
// give one) is read to its end and gets no writer (w is nil): none is
// needed to keep its end away until CloseIO, and opening one would refuse
// a file the shim may not write (on a read-only mount, say), as the stock
// shim, which opens one on any path, refuses it. A directory is the
// client's mistake.
func openStdinFIFO(uri string) (r, w *os.File, err error) {
	path, err := fifoPath(uri, "stdin")
	if err != nil {
		return nil, nil, err
	}
	r, err = os.OpenFile(path, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("open stdin fifo: %w", classify(err))
	}
	typ, err := fileType(r)
	if err != nil {
		r.Close()
		return nil, nil, fmt.Errorf("stat stdin %s: %w", path, err)
	}
	switch typ {
	case unix.S_IFIFO:
	case unix.S_IFDIR:
		r.Close()
		return nil, nil, fmt.Errorf("stdin %s: %w", path, classify(unix.EISDIR))
	default: // a regular file, a device
		return r, nil, nil
	}
	w, err = openIdle(path, unix.O_WRONLY)
	if err != nil {
		r.Close()
		return nil, nil, fmt.Errorf("open stdin fifo writer: %w", classify(err))
	}
	return r, w, nil
}

func (p *Pipes) openStdin(path string) error {
	r, w, err := openStdinFIFO(path)
	if err != nil {
		return err
	}
	p.stdinReader, p.stdinWriter = r, w
	p.toClose = append(p.toClose, r)
	pr, pw, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("stdin pipe: %w", err)
	}
	p.rtIn, p.stdinPipe = pr, pw
	p.toClose = append(p.toClose, pw)
	p.relays = append(p.relays, &pipeRelay{stream: "stdin", src: r, dst: pw})
	p.runStdin(p.relays[len(p.relays)-1], nil)
	return nil
}

// runStdin relays the client's stdin FIFO into the process's pipe, after
// carry (bytes a halted relay had read).
func (p *Pipes) runStdin(pr *pipeRelay, carry []byte) {
	pr.h = newHalter(carry)
	go func() {
		// Ends when the client's writers and ours are all closed (EOF), when
		// the process's stdin is gone (EPIPE), or when Close closes the files.
		_, err := relay(pr.dst, pr.src, nil, pr.h) // stdin: the process's own pace
		if !errors.Is(err, errHalted) {
			pr.dst.Close()
			// Nothing more can reach the process: the client's FIFO loses
			// its readers, so its writes fail (EPIPE) instead of filling the
			// FIFO and blocking until Delete, as with the stock shim.
			pr.src.Close()
			p.CloseStdin()
		}
		pr.h.finish(err)
	}()
}

// CloseStdin closes the shim's writer on the stdin FIFO (CloseIO). Once the
// client's writer is closed as well, the process reads end of file.
// Idempotent; a process without stdin has nothing to close.
func (p *Pipes) CloseStdin() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closeStdinLocked()
}

// closeStdinLocked closes the shim's stdin writer once; the caller holds p.mu.
func (p *Pipes) closeStdinLocked() {
	if p.stdinWriter != nil {
		p.stdinWriter.Close()
		p.stdinWriter = nil
	}
}
