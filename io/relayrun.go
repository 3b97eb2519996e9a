package io

import (
	"errors"
	"fmt"
	stdio "io"
	"log/slog"
	"os"
)

// startRelay makes the pipe a stream's output goes through (its write end is
// returned, for the runtime) and runs run on the read end until the stream
// ends; then it closes the read end and calls done. A relay that fails other
// than by Close keeps draining the pipe, so the process never blocks on it.
func (p *Pipes) startRelay(stream string, run func(src *os.File) error, done func()) (*os.File, error) {
	pr, pw, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("output pipe: %w", err)
	}
	p.toClose = append(p.toClose, pr)
	p.ownQueues = append(p.ownQueues, pr)
	p.outputs.Add(1)
	p.runRelay(stream, pr, run, done)
	return pw, nil
}

// runRelay runs run on src in a goroutine of its own (see startRelay). A
// halted relay leaves everything as it is: its files and its place in
// outputs go to whoever continues the stream.
func (p *Pipes) runRelay(stream string, src *os.File, run func(src *os.File) error, done func()) {
	go func() {
		if !p.waitForLaunch() {
			// The launch failed: the pipe holds the runtime's error, which
			// its caller reports, not output of the process.
			defer p.outputs.Done()
			src.Close()
			done()
			return
		}
		err := run(src)
		if errors.Is(err, errHalted) {
			return
		}
		defer p.outputs.Done()
		if err != nil && !errors.Is(err, os.ErrClosed) {
			relayFailed(stream, err)
			discard(src)
		}
		src.Close()
		done()
	}()
}

// relayFailed reports an output relay that could not write to the client
// (the relay then keeps draining the process's pipe, discarding): the output
// lost from here on must not go unnoticed.
func relayFailed(stream string, err error) {
	slog.Warn("output relay failed; discarding the rest of the stream", "stream", stream, "error", err)
}

// discard reads r until it fails, so a writer on its other end never blocks.
func discard(r stdio.Reader) {
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	for {
		if _, err := r.Read(*bp); err != nil {
			return
		}
	}
}
