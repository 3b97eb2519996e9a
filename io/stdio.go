// Package io moves a process's standard streams between the OCI runtime and
// the client that asked for them (containerd, ctr, CRI), without knowing whose
// process it is.
//
// The container never sees the client's FIFOs: it gets anonymous pipes, and
// the shim relays pipe -> FIFO for stdout/stderr and FIFO -> pipe for stdin.
// The shim holds its own reader on each output FIFO, so a client that goes
// away never makes the relay fail with EPIPE, and its own writer on the stdin
// FIFO, so only CloseIO (not a client detaching) ends the process's input.
package io

import (
	"errors"
	"fmt"
	stdio "io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/fifo"
	"golang.org/x/sys/unix"
)

// Config is the stdio a client asked for: FIFO paths, file:// URIs or empty.
type Config struct {
	Stdin, Stdout, Stderr string
	Terminal              bool
}

// Null reports whether the process gets no stdio at all (/dev/null).
func (c Config) Null() bool { return c.Stdin == "" && c.Stdout == "" && c.Stderr == "" }

// Pipes is one process's stdio: the ends handed to the runtime and the relays
// that connect the other ends to the client.
//
// Locking: mu guards the stdin keep-open writer and closed; the relay
// goroutines own their files and close them when they end.
type Pipes struct {
	// Handed to the runtime; the shim closes its copies once the process has them.
	rtIn, rtOut, rtErr *os.File

	stdinReader *os.File // client's stdin FIFO, read end
	stdinWriter *os.File // shim's own writer on that FIFO, closed by CloseStdin
	stdinPipe   *os.File // write end of the container's stdin pipe

	outputs relayCount // stdout and stderr relays (or the terminal's)
	mu      sync.Mutex
	closed  bool
	toClose []stdio.Closer // every shim-side file, closed by Close
	paced   []*rateLimiter // file:// logs with rate=, released by Drain and Close
	// queues are the pipes output waits in (for introspection): the
	// process's own pipes, and the client's FIFOs.
	ownQueues    []*os.File
	clientQueues []output

	// Terminal processes: the client's stdout waits in consoleOut until the
	// runtime hands over the pty master; then the relays use master.
	terminal   bool
	consoleOut output
	consoleDst output // consoleOut once attached: the console relay's client
	master     *os.File
	// The console relays' halters (runConsole); stdinHalt is nil without stdin.
	consoleHalt, stdinHalt *halter
	hungUp                 atomic.Bool // Hangup was called: the output relay ends once drained

	stallTimeout time.Duration // see DefaultStallTimeout
	dropped      atomic.Uint64 // output bytes discarded while a reader stalled
	moved        atomic.Uint64 // output bytes delivered; Drain watches it move

	// binary:// logger process, if any; loggerExit closes when it is reaped.
	logger     *os.Process
	loggerExit chan struct{}

	// relays are the pipe-to-pipe relays an upgrade can halt and hand over
	// (FIFO outputs and stdin; see handover.go). Written while opening, and
	// by Halt's caller while every relay is halted.
	relays []*pipeRelay
}

// Open prepares stdio for a process: it opens the client's endpoints and the
// pipes for the runtime. Output relays start at once; the container's writes
// flow as soon as it runs.
//
// Outputs are FIFO paths (or existing plain files, appended to), file://
// URIs (raw, or the CRI log format with rotation, see ParseFileURI), or a
// binary:// logger (see openLogger), which then takes both streams.
func Open(cfg Config, env Env) (_ *Pipes, retErr error) {
	p := &Pipes{outputs: relayCount{done: make(chan struct{})}, stallTimeout: env.StallTimeout}
	p.outputs.Add(1) // held while the relays start, released below
	if p.stallTimeout == 0 {
		p.stallTimeout = DefaultStallTimeout
	}
	defer func() {
		if retErr != nil {
			p.Close()
		}
	}()
	var err error
	switch {
	case cfg.Terminal:
		err = p.openTerminal(cfg, env)
	case hasScheme(cfg.Stdout, "binary") || hasScheme(cfg.Stderr, "binary"):
		if cfg.Stdin != "" {
			err = p.openStdin(cfg.Stdin)
		}
		if err == nil {
			err = p.openLogger(firstOf(cfg.Stdout, cfg.Stderr), env)
		}
	default:
		err = p.openStreams(cfg)
	}
	p.outputs.Done()
	if err != nil {
		return nil, err
	}
	return p, nil
}

func hasScheme(uri, scheme string) bool { return strings.HasPrefix(uri, scheme+"://") }

func firstOf(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// openStreams sets up stdin, stdout and stderr as FIFOs or files.
func (p *Pipes) openStreams(cfg Config) error {
	if cfg.Stdin != "" {
		if err := p.openStdin(cfg.Stdin); err != nil {
			return err
		}
	}
	var shared *rotatingFile // stdout and stderr naming the same file:// URI share it
	for _, s := range []struct {
		uri, name string
		rt        **os.File
	}{{cfg.Stdout, "stdout", &p.rtOut}, {cfg.Stderr, "stderr", &p.rtErr}} {
		if s.uri == "" {
			continue
		}
		if hasScheme(s.uri, "file") {
			o, err := ParseFileURI(s.uri)
			if err != nil {
				return err
			}
			rf := shared
			if rf == nil || cfg.Stdout != cfg.Stderr {
				if rf, err = openRotating(o); err != nil {
					return err
				}
				p.toClose = append(p.toClose, rf) // whichever file is current then
				if rf.pace != nil {
					p.paced = append(p.paced, rf.pace)
				}
				shared = rf
			}
			w, err := p.startFileOutput(rf, s.name)
			if err != nil {
				return err
			}
			*s.rt = w
			continue
		}
		dst, err := openOutput(s.uri, s.name, p.stallTimeout)
		if err != nil {
			return err
		}
		if *s.rt, err = p.startOutput(dst, s.name); err != nil {
			return err
		}
	}
	return nil
}

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
			err = pr.log.relayCRI(src, pr.stream, &p.moved, pr.h)
		} else {
			err = pr.log.relayRaw(src, &p.moved, pr.h)
		}
		pr.h.finish(err)
		return err
	}
}

// relayFailed reports an output relay that could not write to the client
// (the relay then keeps draining the process's pipe, discarding): the output
// lost from here on must not go unnoticed.
func relayFailed(stream string, err error) {
	slog.Warn("output relay failed; discarding the rest of the stream", "stream", stream, "error", err)
}

// RuntimeFiles returns the files the runtime gives the process as fds 0, 1, 2
// (nil means /dev/null).
func (p *Pipes) RuntimeFiles() (in, out, errf *os.File) { return p.rtIn, p.rtOut, p.rtErr }

// ReleaseRuntimeFiles closes the shim's copies of the process's ends. Call it
// once the runtime has started the process: from then on the process holds
// the only write ends, so its exit ends the output relays.
func (p *Pipes) ReleaseRuntimeFiles() {
	p.mu.Lock() // against Close and Handable
	defer p.mu.Unlock()
	for _, f := range []*os.File{p.rtIn, p.rtOut, p.rtErr} {
		if f != nil {
			f.Close()
		}
	}
	p.rtIn, p.rtOut, p.rtErr = nil, nil, nil
}

// openTerminal opens the client's ends for a terminal process. The pty
// itself comes later (AttachConsole): the runtime creates it.
func (p *Pipes) openTerminal(cfg Config, env Env) error {
	p.terminal = true
	p.outputs.Add(1) // the console relay; Done by it, or by Close if never attached
	if cfg.Stdin != "" {
		r, w, err := openStdinFIFO(cfg.Stdin)
		if err != nil {
			return err
		}
		p.stdinReader, p.stdinWriter = r, w
		p.toClose = append(p.toClose, r)
	}
	switch {
	case hasScheme(cfg.Stdout, "binary"):
		return p.openLogger(cfg.Stdout, env)
	case hasScheme(cfg.Stdout, "file"):
		o, err := ParseFileURI(cfg.Stdout)
		if err != nil {
			return err
		}
		if o.CRI || o.MaxSize > 0 || o.Rate > 0 {
			return fmt.Errorf("terminal output: file:// format, rotation and rate options apply to non-terminal processes: %w", errdefs.ErrInvalidArgument)
		}
		dst, err := openLogFile(o.Path)
		if err != nil {
			return fmt.Errorf("stdout: %w", err)
		}
		p.consoleOut = readyFile{dst}
		p.toClose = append(p.toClose, dst)
	case cfg.Stdout != "":
		dst, err := openOutput(cfg.Stdout, "stdout", p.stallTimeout)
		if err != nil {
			return err
		}
		p.consoleOut = dst
		p.toClose = append(p.toClose, dst)
	}
	return nil
}

// Terminal reports whether the process runs on a pty.
func (p *Pipes) Terminal() bool { return p.terminal }

// openStdinFIFO opens the client's stdin FIFO for reading, and the shim's own
// writer on it. Non-blocking opens never wait for a peer: a FIFO opened for
// reading returns at once, and our writer then has a reader to pair with.
func openStdinFIFO(uri string) (r, w *os.File, err error) {
	path, err := fifoPath(uri, "stdin")
	if err != nil {
		return nil, nil, err
	}
	r, err = os.OpenFile(path, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("open stdin fifo: %w", classify(err))
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
		}
		pr.h.finish(err)
	}()
}

func (p *Pipes) startOutput(dst output, stream string) (*os.File, error) {
	pr := &pipeRelay{stream: stream, out: dst}
	w, err := p.startRelay(stream, p.outputRun(pr, nil), func() { dst.Close() })
	if err != nil {
		dst.Close()
		return nil, err
	}
	pr.src = p.ownQueues[len(p.ownQueues)-1]
	p.relays = append(p.relays, pr)
	// After the read end: Close closes newest first, the destination before
	// the source its relay holds.
	p.toClose = append(p.toClose, dst)
	p.clientQueues = append(p.clientQueues, dst)
	return w, nil
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
	DrainIdleTimeout = time.Second
	drainPoll        = 100 * time.Millisecond
)

// Drain waits until the output relays have delivered everything the process
// wrote (its pipes reached end of file): at most timeout, and no longer than
// DrainIdleTimeout without any progress (a binary:// logger, whose progress
// the shim cannot see, gets the whole timeout). It reports whether they
// finished.
func (p *Pipes) Drain(timeout time.Duration) bool {
	// The process is gone: what is left in its pipes goes out unpaced.
	p.releasePace()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(drainPoll)
	defer tick.Stop()
	last, idleSince := p.moved.Load(), time.Now()
	for {
		select {
		case <-p.outputs.done:
			return true
		case now := <-tick.C:
			if now.After(deadline) {
				return false
			}
			if cur := p.moved.Load(); cur != last {
				last, idleSince = cur, now
			} else if p.logger == nil && now.Sub(idleSince) >= DrainIdleTimeout {
				return false
			}
		}
	}
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
		p.toClose[i].Close()
	}
	p.stopLogger()
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
	f, err := os.OpenFile(path, unix.O_WRONLY|unix.O_APPEND|unix.O_CREAT|unix.O_CLOEXEC, 0o640)
	if err != nil {
		return nil, fmt.Errorf("open log %s: %w", path, classify(err))
	}
	return f, nil
}

func fifoPath(uri, stream string) (string, error) {
	path := strings.TrimPrefix(uri, "fifo://")
	if !filepath.IsAbs(path) {
		return "", fmt.Errorf("%s %q: must be an absolute path: %w", stream, uri, errdefs.ErrInvalidArgument)
	}
	return path, nil
}

// classify marks a missing or unusable stdio path as the client's mistake.
func classify(err error) error {
	if errors.Is(err, os.ErrNotExist) || errors.Is(err, unix.ENOTDIR) || errors.Is(err, unix.ENXIO) {
		return fmt.Errorf("%w: %w", errdefs.ErrInvalidArgument, err)
	}
	return err
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
