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
	"cmp"
	"errors"
	"fmt"
	stdio "io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"
)

// Config is the stdio a client asked for: FIFO paths, file:// URIs or empty.
type Config struct {
	Stdin, Stdout, Stderr string
	Terminal              bool
	// UID and GID own the pipe ends handed to the runtime (the runtime
	// options' IoUid and IoGid; 0: root, as made). Docker with
	// --userns-remap sets them to the remapped root, so that a process can
	// reopen its own /dev/stdout (nginx logs to it by path).
	UID, GID uint32
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

	stallTimeout  time.Duration            // see DefaultStallTimeout
	readerOwner   func() (bool, time.Time) // see Env.ReaderOwner
	returnGrace   time.Duration            // see DefaultReturnGrace
	attachTimeout time.Duration            // see DefaultAttachTimeout (Open only: a handed-over output is attached)
	dropped       atomic.Uint64            // output bytes discarded while a reader stalled
	moved         atomic.Uint64            // output bytes delivered; Drain watches it move

	// binary:// logger process, if any; loggerExit closes when it is reaped.
	logger     *os.Process
	loggerExit chan struct{}
	loggerStop time.Duration // how long stopLogger waits at each step; 0: loggerStopTimeout, loggerKillTimeout
	// loggerEnds are the shim's read ends on the logger's pipes (nil
	// until the logger is ready; see loggerdrain.go).
	loggerEnds atomic.Pointer[loggerEnds]

	// hold keeps the output relays waiting until the runtime has launched
	// the process (Env.HoldOutput; nil: they run at once). See hold.go.
	hold *outputHold

	// relays are the pipe-to-pipe relays an upgrade can halt and hand over
	// (FIFO outputs and stdin; see handover.go). Written while opening, and
	// by Halt's caller while every relay is halted.
	relays []*pipeRelay
	// adoptedLingering are the lingering FIFOs a predecessor handed over
	// (fifoend.go), by stream: no relay of this binary names them, and a
	// next upgrade hands them on. Written by ImportPipes only.
	adoptedLingering map[string]*clientFIFO
}

// Open prepares stdio for a process: it opens the client's endpoints and the
// pipes for the runtime. Output relays start at once; the container's writes
// flow as soon as it runs, or, with env.HoldOutput, once Launched is called.
//
// Outputs are FIFO paths (or existing plain files, appended to), file://
// URIs (raw, or the CRI log format with rotation, see ParseFileURI), or a
// binary:// logger (see openLogger), which then takes both streams.
func Open(cfg Config, env Env) (_ *Pipes, retErr error) {
	p := &Pipes{outputs: relayCount{done: make(chan struct{})}, stallTimeout: env.StallTimeout,
		readerOwner: env.ReaderOwner}
	p.outputs.Add(1) // held while the relays start, released below
	if p.stallTimeout == 0 {
		p.stallTimeout = DefaultStallTimeout
	}
	p.attachTimeout = cmp.Or(env.AttachTimeout, DefaultAttachTimeout)
	p.returnGrace = cmp.Or(env.ReturnGrace, DefaultReturnGrace)
	if env.HoldOutput {
		p.hold = newOutputHold()
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
	case isLoggerURI(cfg.Stdout) || isLoggerURI(cfg.Stderr):
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
	if err == nil && (cfg.UID != 0 || cfg.GID != 0) {
		err = p.chownRuntimeFiles(int(cfg.UID), int(cfg.GID))
	}
	if err != nil {
		return nil, err
	}
	return p, nil
}

// chownRuntimeFiles gives the pipe ends the process gets to uid and gid, as
// the stock shim does for IoUid and IoGid.
func (p *Pipes) chownRuntimeFiles(uid, gid int) error {
	for _, f := range []*os.File{p.rtIn, p.rtOut, p.rtErr} {
		if f == nil {
			continue
		}
		if err := f.Chown(uid, gid); err != nil {
			return fmt.Errorf("stdio owner %d:%d (IoUid, IoGid): %w", uid, gid, err)
		}
	}
	return nil
}

func hasScheme(uri, scheme string) bool { return strings.HasPrefix(uri, scheme+"://") }

// isLoggerURI reports whether uri names a logging binary: binary://, or
// binary-v2://, which containerd 2.2+ offers (log-uri-schemes) and whose
// logger proves it is ready with a byte on fd 5 (see openLogger).
func isLoggerURI(uri string) bool { return hasScheme(uri, "binary") || hasScheme(uri, "binary-v2") }

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
	// stdout and stderr naming the same file share it: one lock, one size
	// and one rotation. The same file is known by its parsed options, not
	// the URI's text, which may spell it differently (options in another
	// order, a localhost host), or by its inode when the paths differ (a
	// symlink, a hard link, a bind mount of it).
	var shared *rotatingFile
	var fifos streamFIFOs // and the same FIFO, one clientFIFO
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
			if namesFIFO(o) {
				dst, err := fifos.open(o.Path, o.Path, s.name, p.attachTimeout)
				if err != nil {
					return err
				}
				if *s.rt, err = p.startOutput(dst, s.name); err != nil {
					return err
				}
				continue
			}
			rf := shared
			if rf != nil && rf.opts != o {
				same := rf.opts.Path == o.Path || rf.isFile(o.Path)
				if same && rf.opts != withPath(o, rf.opts.Path) {
					// Two formats or rotations in one file would corrupt it.
					return fmt.Errorf("stdout and stderr log to one file, %s, with different options (%q, %q): %w", o.Path, cfg.Stdout, cfg.Stderr, errdefs.ErrInvalidArgument)
				}
				if !same {
					rf = nil
				}
			}
			if rf == nil {
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
		path, _ := fifoPath(s.uri, s.name) // "" if not a path: openOutput says why
		dst, err := fifos.open(s.uri, path, s.name, p.attachTimeout)
		if err != nil {
			return err
		}
		if *s.rt, err = p.startOutput(dst, s.name); err != nil {
			return err
		}
	}
	return nil
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

// Terminal reports whether the process runs on a pty.
func (p *Pipes) Terminal() bool { return p.terminal }

func fifoPath(uri, stream string) (string, error) {
	path := strings.TrimPrefix(uri, "fifo://")
	if !filepath.IsAbs(path) {
		return "", fmt.Errorf("%s %q: must be an absolute path: %w", stream, uri, errdefs.ErrInvalidArgument)
	}
	if strings.IndexByte(path, 0) >= 0 {
		// No system call takes it; Go's would fail with a bare EINVAL.
		return "", fmt.Errorf("%s %q: a path cannot hold a NUL byte: %w", stream, uri, errdefs.ErrInvalidArgument)
	}
	return path, nil
}

// classify marks a missing or unusable stdio path as the client's mistake:
// one that names nothing, a directory, or a name the kernel refuses (too
// long, a symlink loop).
func classify(err error) error {
	if errors.Is(err, os.ErrNotExist) || errors.Is(err, unix.ENOTDIR) || errors.Is(err, unix.ENXIO) ||
		errors.Is(err, unix.EISDIR) || errors.Is(err, unix.ENAMETOOLONG) || errors.Is(err, unix.ELOOP) {
		return fmt.Errorf("%w: %w", errdefs.ErrInvalidArgument, err)
	}
	return err
}
