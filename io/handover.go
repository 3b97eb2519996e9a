package io

import (
	"cmp"
	"fmt"
	"log/slog"
	"os"
	"sync/atomic"
	"time"

	"github.com/containerd/errdefs"
)

// pipeRelay is one pipe-to-pipe relay of a process: an output (the
// process's pipe into the client's FIFO) or stdin (the client's FIFO into
// the process's pipe). An in-place upgrade halts it between two chunks and
// hands its files and undelivered bytes to the next binary.
type pipeRelay struct {
	stream string
	src    *os.File      // the process's pipe (outputs), the client's FIFO (stdin)
	out    output        // FIFO outputs: the client's FIFO
	log    *rotatingFile // file:// outputs: the log (shared by both streams of one URI)
	dst    *os.File      // stdin: the process's pipe
	h      *halter
	// sharer: a FIFO output's relay writing through the same client FIFO
	// as an earlier one of the process (sharedfifo.go), through a
	// duplicate of its own; end is what the relay writes through, for Halt
	// to wake it (nil while it has none).
	sharer bool
	end    atomic.Pointer[os.File]
}

// outputRun is an output relay's body: wait for the client's reader, then
// relay, writing carry first; discarding starts it in the stall policy's
// discarding state (a predecessor's, handed over).
func (p *Pipes) outputRun(pr *pipeRelay, carry []byte, discarding bool) func(src *os.File) error {
	pr.h = newHalter(carry)
	pr.h.discarding = discarding
	stall := p.newStallPolicy(pr.stream)
	return func(src *os.File) error {
		out, release, err := outputEnd(pr)
		if err != nil {
			pr.h.finish(err)
			return err
		}
		pr.end.Store(out)
		_, err = relay(out, src, stall, pr.h)
		pr.end.Store(nil)
		release()
		pr.h.finish(err)
		return err
	}
}

// Handable reports whether this process's stdio can be handed over by an
// in-place upgrade today, and why not. Supported: no stdio, FIFOs (as
// containerd's clients and CRI's podsandbox logs through containerd give),
// file:// logs, binary:// loggers, plain files (an output path naming a
// regular file or a device, appended to; a stdin path naming a regular
// file), and terminals writing to any of these; not yet: a process whose
// runtime ends the shim still holds (not started).
func (p *Pipes) Handable() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case p.closed:
		return fmt.Errorf("stdio closed: %w", errdefs.ErrFailedPrecondition)
	case p.rtIn != nil || p.rtOut != nil || p.rtErr != nil, p.hold != nil && p.hold.held():
		return fmt.Errorf("process not started yet: %w", errdefs.ErrFailedPrecondition)
	case p.terminal && p.master == nil:
		return fmt.Errorf("terminal not attached yet: %w", errdefs.ErrFailedPrecondition)
	case p.terminal:
		return nil
	}
	outputs := 0
	for _, r := range p.relays {
		if r.out != nil || r.log != nil {
			outputs++
		}
	}
	if outputs != len(p.ownQueues) {
		return fmt.Errorf("handing over an output of this kind: %w", errdefs.ErrNotImplemented)
	}
	return nil
}

// Halt stops every relay between two chunks (an output relay still waiting
// for its client's reader counts as busy: FailedPrecondition). On error the
// relays that did stop run again.
func (p *Pipes) Halt(timeout time.Duration) error {
	if err := p.Handable(); err != nil {
		return err
	}
	if p.terminal {
		return p.haltConsole(timeout)
	}
	for _, r := range p.relays {
		if f, ok := r.out.(*clientFIFO); ok {
			if err := f.mustBeOpened(r.stream); err != nil {
				return err
			}
		}
	}
	// Every relay is asked first, so that none waits on another's halt.
	// (Two relays writing one shared FIFO, sharedfifo.go, each write
	// through a file of their own, ownEnd: one no longer waits for the
	// other's write lock, which no deadline ends.)
	for _, r := range p.relays {
		r.h.request()
	}
	for _, r := range p.relays {
		dst := r.dst // nil for a file:// log: nothing to wake on its side
		if r.out != nil {
			// The relay's own end of a shared FIFO; asked after the
			// requests: a relay that stores its end later sees its
			// request before it waits.
			if dst = r.end.Load(); dst == nil {
				dst, _ = r.out.ready()
			}
		}
		if !r.h.halt(r.src, dst, timeout) {
			p.restart(p.relays) // withdraws the requests not acted on
			return fmt.Errorf("%s relay did not stop within %v: %w", r.stream, timeout, errdefs.ErrFailedPrecondition)
		}
	}
	return nil
}

// Restart runs halted relays again (the upgrade did not happen).
func (p *Pipes) Restart() {
	if p.terminal {
		p.restartConsole()
		return
	}
	p.restart(p.relays)
}

// haltConsole halts a terminal's two relays.
func (p *Pipes) haltConsole(timeout time.Duration) error {
	var dst *os.File
	switch f := p.consoleDst.(type) {
	case *clientFIFO:
		if err := f.mustBeOpened("terminal"); err != nil {
			return err
		}
		dst = f.w
	case readyFile:
		if isPipe(f.File) { // a logger's pipe, whose write may wait; a log file's does not
			dst = f.File
		}
	}
	if !p.consoleHalt.halt(p.master, dst, timeout) {
		p.restartConsole()
		return fmt.Errorf("terminal output relay did not stop within %v: %w", timeout, errdefs.ErrFailedPrecondition)
	}
	if p.stdinHalt != nil && !p.stdinHalt.halt(p.stdinReader, p.master, timeout) {
		p.restartConsole()
		return fmt.Errorf("terminal input relay did not stop within %v: %w", timeout, errdefs.ErrFailedPrecondition)
	}
	return nil
}

// restartConsole runs a terminal's halted relays again.
func (p *Pipes) restartConsole() {
	out := p.consoleHalt
	if !out.stopped() {
		if p.stdinHalt != nil {
			p.stdinHalt.withdraw() // not asked yet: the output's halt failed first
		}
		return
	}
	var inCarry []byte
	var inLast byte
	withStdin, eofPending := false, false
	if in := p.stdinHalt; in != nil && in.stopped() {
		withStdin = !in.ended.Load()
		inCarry, inLast, eofPending = in.carry, in.lastIn, in.eofPending
	}
	if out.ended.Load() {
		// The output is over (the process hung up), but whatever still
		// holds the terminal may read: the input runs again as it ran.
		if withStdin {
			p.runConsoleInput(inCarry, inLast, eofPending)
		}
		return
	}
	m, err := newRawFile(p.master)
	if err != nil { // it was driven before the halt: not expected
		slog.Error("terminal relay not restarted after a halt", "error", err)
		p.outputs.Done() // the halted relay kept Open's reservation
		return
	}
	p.runConsole(m, out.carry, inCarry, inLast, eofPending, withStdin)
}

func (p *Pipes) restart(relays []*pipeRelay) {
	for _, r := range relays {
		if !r.h.stopped() || r.h.ended.Load() {
			continue // it goes on by itself, or its stream is over
		}
		p.startAgain(r, r.h.carry, r.h.discarding)
	}
}

// startAgain starts a relay on files it already has, writing carry first
// (and, for a FIFO output, discarding if its predecessor was).
func (p *Pipes) startAgain(r *pipeRelay, carry []byte, discarding bool) {
	switch {
	case r.out != nil:
		p.runRelay(r.stream, r.src, p.outputRun(r, carry, discarding), func() { endOfStream(r.out) })
	case r.log != nil:
		p.runRelay(r.stream, r.src, p.fileRun(r, carry), r.log.release)
	default:
		p.runStdin(r, carry)
	}
}

// FDKeeper keeps duplicates of files and bare descriptors open across
// execve and says their numbers (handover.FDs).
type FDKeeper interface {
	KeepDup(f *os.File) (int, error)
	KeepRaw(fd int, name string) (int, error)
}

// PipesState is a halted process's stdio as handed over: descriptor
// numbers in the successor, undelivered bytes and counters.
type PipesState struct {
	Terminal *TerminalState `json:"terminal,omitempty"`
	Null     bool           `json:"null,omitempty"`
	Outputs  []OutputState  `json:"outputs,omitempty"`
	Logs     []LogState     `json:"logs,omitempty"` // file:// logs, which Outputs name by index
	Stdin    *StdinState    `json:"stdin,omitempty"`
	// LoggerPid is a binary:// logger still running (it keeps reading the
	// process's pipes); 0: none.
	LoggerPid int `json:"loggerPid,omitempty"`
	// LoggerEnds are the shim's own read ends on those pipes
	// (loggerdrain.go; layout 6 on, nil before: the successor then holds
	// none).
	LoggerEnds *LoggerEndsState `json:"loggerEnds,omitempty"`
	// Lingering are the FIFOs of ended outputs whose bytes wait for the
	// client's next reader (fifoend.go; layout 14).
	Lingering    []LingeringState `json:"lingering,omitempty"`
	Moved        uint64           `json:"moved"`
	Dropped      uint64           `json:"dropped"`
	StallTimeout time.Duration    `json:"stallTimeout"`
}

// OutputState is one output relay: the process's pipe, the client's FIFO
// (the write end, the shim's own reader, the O_PATH handle) and carry.
type OutputState struct {
	Stream string `json:"stream"`
	Pipe   int    `json:"pipe"`
	FIFO   int    `json:"fifo"`
	Keep   int    `json:"keep"`
	Handle int    `json:"handle"`
	Log    int    `json:"log"` // file:// output: index in PipesState.Logs; -1 for a FIFO
	// Plain: the output is a plain file (a path naming no FIFO), appended
	// to; FIFO is that file, and there is no reader or handle (Keep and
	// Handle are -1). Layout 9.
	Plain bool   `json:"plain,omitempty"`
	Carry []byte `json:"carry,omitempty"`
	// Discarding: the client stopped reading; output is being discarded
	// until it reads again (the stall policy), and goes on being.
	Discarding bool `json:"discarding,omitempty"`
}

// LogState is a file:// log: its options, and the live file and its size
// (rotation goes on from there). The outputs that name it are its writers.
type LogState struct {
	Opts FileOptions `json:"opts"`
	File int         `json:"file"`
	Size int64       `json:"size"`
}

// StdinState is the stdin relay: the client's FIFO (the read end, the
// shim's own writer or -1 after CloseIO) and the process's pipe.
type StdinState struct {
	FIFO   int    `json:"fifo"`
	Writer int    `json:"writer"`
	Pipe   int    `json:"pipe"`
	Carry  []byte `json:"carry,omitempty"`
}

// TerminalState is a terminal's relays: the pty master (the pty itself,
// its window size and session, stay in the kernel), the client's output
// FIFO and stdin FIFO, and what each direction had read and not written.
type TerminalState struct {
	Master     int          `json:"master"`
	Out        *OutputState `json:"out,omitempty"`
	Stdin      *StdinState  `json:"stdin,omitempty"`
	OutEnded   bool         `json:"outEnded,omitempty"`
	StdinEnded bool         `json:"stdinEnded,omitempty"`
	HungUp     bool         `json:"hungUp,omitempty"`
	// StdinLast is the last byte typed into the pty (0: none, or a binary
	// that did not record it: taken as the start of a line).
	StdinLast byte `json:"stdinLast,omitempty"`
	// StdinEOFPending: the input had ended and the stdin carry is the
	// terminal's end-of-file characters not written yet (layout 3).
	StdinEOFPending bool `json:"stdinEofPending,omitempty"`
	// Log is the terminal's output when it goes to a file:// log or a
	// binary:// logger instead of a FIFO (layout 8).
	Log *TerminalLogState `json:"log,omitempty"`
}

// TerminalLogState is a terminal's output to a log file or to a logger's
// pipe (Pipe), with the bytes a halted relay had read and not written.
type TerminalLogState struct {
	File  int    `json:"file"`
	Pipe  bool   `json:"pipe"`
	Carry []byte `json:"carry,omitempty"`
}

// Export describes halted stdio, keeping duplicates of its files.
func (p *Pipes) Export(fds FDKeeper) (*PipesState, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	st := &PipesState{Moved: p.moved.Load(), Dropped: p.dropped.Load(), StallTimeout: p.stallTimeout}
	keep := func(f *os.File) (int, error) {
		if f == nil {
			return -1, nil
		}
		return fds.KeepDup(f)
	}
	if p.logger != nil {
		select {
		case <-p.loggerExit:
			// Gone: nothing to take over, and no exit for the successor to
			// drain the ends at. The exit callback closes loggerExit before
			// it drains them; drain here too (idempotent), so that they go
			// over as draining, or as held with the group left to watch,
			// never held for a logger nobody waits for. (In the shim the
			// reaper's pause lets that callback finish first; this keeps
			// Export right without relying on it.)
			p.loggerExited()
		default:
			st.LoggerPid = p.logger.Pid
		}
	}
	ends, err := p.loggerEnds.Load().export(fds)
	if err != nil {
		return nil, err
	}
	st.LoggerEnds = ends
	if p.terminal {
		// After the logger's: a terminal's output may go to one.
		t, err := p.exportConsole(keep)
		if err != nil {
			return nil, err
		}
		st.Terminal = t
		return st, nil
	}
	if st.Lingering, err = p.exportLingering(keep); err != nil {
		return nil, err
	}
	var logs []*rotatingFile // st.Logs' files, to find a shared one
	for _, r := range p.relays {
		if r.h.ended.Load() {
			continue // its stream is over, its files closed (or lingering, above)
		}
		if r.log != nil {
			o := OutputState{Stream: r.stream, FIFO: -1, Keep: -1, Handle: -1, Log: -1, Carry: r.h.carry}
			for i, l := range logs {
				if l == r.log {
					o.Log = i
				}
			}
			if o.Log < 0 {
				r.log.mu.Lock()
				ls := LogState{Opts: r.log.opts, Size: r.log.size}
				var err error
				ls.File, err = keep(r.log.f)
				r.log.mu.Unlock()
				if err != nil {
					return nil, err
				}
				o.Log = len(logs)
				logs = append(logs, r.log)
				st.Logs = append(st.Logs, ls)
			}
			var err error
			if o.Pipe, err = keep(r.src); err != nil {
				return nil, err
			}
			st.Outputs = append(st.Outputs, o)
			continue
		}
		if r.out == nil {
			in := &StdinState{Carry: r.h.carry}
			var err error
			if in.FIFO, err = keep(r.src); err == nil {
				if in.Writer, err = keep(p.stdinWriter); err == nil {
					in.Pipe, err = keep(r.dst)
				}
			}
			if err != nil {
				return nil, err
			}
			st.Stdin = in
			continue
		}
		o := OutputState{Stream: r.stream, Log: -1, Carry: r.h.carry, Discarding: r.h.discarding}
		var err error
		if o.Pipe, err = keep(r.src); err == nil {
			switch out := r.out.(type) {
			case *clientFIFO:
				err = o.keepFIFO(out, keep)
			case readyFile:
				o.Plain, o.Keep, o.Handle = true, -1, -1
				o.FIFO, err = keep(out.File)
			default:
				err = fmt.Errorf("handing over %s: an output of type %T: %w", r.stream, out, errdefs.ErrNotImplemented)
			}
		}
		if err != nil {
			return nil, err
		}
		st.Outputs = append(st.Outputs, o)
	}
	st.Null = len(st.Outputs) == 0 && st.Stdin == nil && st.Terminal == nil
	return st, nil
}

// ImportPipes rebuilds handed-over stdio and starts its relays, each writing
// its carry first. adopt turns a descriptor number into a file, registered
// with the poller or not (handover.Adopt).
func ImportPipes(st PipesState, adopt func(fd int, name string, pollable bool) (*os.File, error), env Env) (*Pipes, error) {
	p := &Pipes{outputs: relayCount{done: make(chan struct{})}, stallTimeout: st.StallTimeout,
		readerOwner: env.ReaderOwner, returnGrace: cmp.Or(env.ReturnGrace, DefaultReturnGrace)}
	p.outputs.Add(1) // held while the relays start, as in Open
	defer p.outputs.Done()
	p.moved.Store(st.Moved)
	p.dropped.Store(st.Dropped)
	if st.LoggerPid > 0 && env.Claim == nil {
		return nil, fmt.Errorf("binary:// logger %d: no way to wait for it: %w", st.LoggerPid, errdefs.ErrNotImplemented)
	}
	if st.LoggerEnds != nil { // before the logger's exit can drain them
		if err := p.importLoggerEnds(st.LoggerEnds, st.LoggerPid, adopt); err != nil {
			return nil, err
		}
	}
	if st.LoggerPid > 0 {
		p.adoptLogger(st.LoggerPid, env.Claim)
	}
	var ferr error
	get := func(fd int, name string, pollable bool) *os.File {
		if fd < 0 {
			return nil
		}
		f, err := adopt(fd, name, pollable)
		if err != nil && ferr == nil {
			ferr = err
		}
		return f
	}
	if t := st.Terminal; t != nil {
		if err := importConsole(p, t, get, &ferr); err != nil {
			return nil, err
		}
		return p, nil
	}
	if in := st.Stdin; in != nil {
		r, w, pipe := get(in.FIFO, "stdin fifo", polled), get(in.Writer, "stdin fifo writer", held), get(in.Pipe, "stdin pipe", polled)
		if ferr != nil {
			return nil, ferr
		}
		p.stdinReader, p.stdinWriter, p.stdinPipe = r, w, pipe
		p.toClose = append(p.toClose, r, pipe)
		p.relays = append(p.relays, &pipeRelay{stream: "stdin", src: r, dst: pipe})
	}
	for _, l := range st.Lingering {
		p.importLingering(l, get)
		if ferr != nil {
			return nil, ferr
		}
	}
	var logs []*rotatingFile
	var fifos []*clientFIFO // the client FIFOs imported so far
	for _, ls := range st.Logs {
		// Opened non-blocking as openLogFile opens it: a regular file
		// stays out of the poller all the same, and a FIFO (namesFIFO) is
		// in it, so that Close wakes a write waiting for room
		// (rotatingFile.Close).
		f, err := adopt(ls.File, ls.Opts.Path, polled)
		if err != nil {
			return nil, err
		}
		rf := newRotatingFile(ls.Opts, f, ls.Size)
		if ls.Opts.Rate > 0 {
			rf.pace = newRateLimiter(ls.Opts.Rate)
			p.paced = append(p.paced, rf.pace)
		}
		p.toClose = append(p.toClose, rf)
		logs = append(logs, rf)
	}
	for _, o := range st.Outputs {
		if o.Log >= 0 {
			if o.Log >= len(logs) {
				return nil, fmt.Errorf("%s: log %d of %d: %w", o.Stream, o.Log, len(logs), errdefs.ErrInvalidArgument)
			}
			pipe := get(o.Pipe, o.Stream+" pipe", polled)
			if ferr != nil {
				return nil, ferr
			}
			p.toClose = append(p.toClose, pipe)
			p.ownQueues = append(p.ownQueues, pipe)
			logs[o.Log].users++ // as startFileOutput counts a writer
			p.relays = append(p.relays, &pipeRelay{stream: o.Stream, src: pipe, log: logs[o.Log]})
			continue
		}
		if o.Plain {
			// Written through the poller where it can be (a device), as
			// os.OpenFile made it; a regular file is not (openOutput).
			pipe, f := get(o.Pipe, o.Stream+" pipe", polled), get(o.FIFO, o.Stream+" file", polled)
			if ferr != nil {
				return nil, ferr
			}
			out := readyFile{f}
			p.toClose = append(p.toClose, pipe, out)
			p.ownQueues = append(p.ownQueues, pipe)
			p.clientQueues = append(p.clientQueues, out)
			p.relays = append(p.relays, &pipeRelay{stream: o.Stream, src: pipe, out: out})
			continue
		}
		pipe, f := get(o.Pipe, o.Stream+" pipe", polled), o.importFIFO(get)
		if ferr != nil {
			return nil, ferr
		}
		g := shareImported(f, fifos)
		if g == f {
			fifos = append(fifos, f)
			p.clientQueues = append(p.clientQueues, f)
		}
		p.toClose = append(p.toClose, pipe, g) // once per relay, as in Open
		p.ownQueues = append(p.ownQueues, pipe)
		// g != f: stdout and stderr on one FIFO (sharedfifo.go)
		p.relays = append(p.relays, &pipeRelay{stream: o.Stream, src: pipe, out: g, sharer: g != f})
	}
	// What each relay starts with, in p.relays' order (stdin first).
	type start struct {
		carry      []byte
		discarding bool
	}
	starts := make([]start, 0, len(p.relays))
	if st.Stdin != nil {
		starts = append(starts, start{carry: st.Stdin.Carry})
	}
	for _, o := range st.Outputs {
		starts = append(starts, start{o.Carry, o.Discarding})
	}
	for i, r := range p.relays {
		if r.out != nil || r.log != nil {
			p.outputs.Add(1)
		}
		p.startAgain(r, starts[i].carry, starts[i].discarding)
	}
	return p, nil
}

// keepFIFO keeps the client FIFO's three ends: the write end, the shim's own
// reader and the O_PATH handle.
func (o *OutputState) keepFIFO(f *clientFIFO, keep func(*os.File) (int, error)) error {
	f.mu.Lock()
	k := f.keep
	f.mu.Unlock()
	var err error
	if o.FIFO, err = keep(f.w); err == nil {
		if o.Keep, err = keep(k); err == nil {
			o.Handle, err = keep(f.handle)
		}
	}
	return err
}

// exportConsole describes a halted terminal.
func (p *Pipes) exportConsole(keep func(*os.File) (int, error)) (*TerminalState, error) {
	t := &TerminalState{OutEnded: p.consoleHalt.ended.Load(), HungUp: p.hungUp.Load()}
	var err error
	if t.Master, err = keep(p.master); err != nil {
		return nil, err
	}
	// An output that has ended (the pty hung up and drained) has nothing
	// more to go over.
	dst := p.consoleDst
	if t.OutEnded {
		dst = nil
	}
	switch dst := dst.(type) {
	case *clientFIFO:
		o := &OutputState{Stream: "stdout", Pipe: -1, Log: -1, Carry: p.consoleHalt.carry}
		if err := o.keepFIFO(dst, keep); err != nil {
			return nil, err
		}
		t.Out = o
	case readyFile:
		l := &TerminalLogState{Pipe: isPipe(dst.File), Carry: p.consoleHalt.carry}
		if l.File, err = keep(dst.File); err != nil {
			return nil, err
		}
		t.Log = l
	}
	if p.stdinReader != nil {
		in := &StdinState{Pipe: -1}
		if h := p.stdinHalt; h != nil {
			in.Carry, t.StdinEnded, t.StdinLast, t.StdinEOFPending = h.carry, h.ended.Load(), h.lastIn, h.eofPending
		}
		if in.FIFO, err = keep(p.stdinReader); err == nil {
			in.Writer, err = keep(p.stdinWriter)
		}
		if err != nil {
			return nil, err
		}
		t.Stdin = in
	}
	return t, nil
}

// How a handed-over file is adopted: a file the shim reads or writes goes
// to the poller (polled); one it only holds (its own writer on stdin, its
// own reader on an output FIFO, the O_PATH handle, a log file) stays in
// blocking mode, out of the poller, as openIdle made it (held).
const polled, held = true, false

type adoptFunc func(fd int, name string, pollable bool) *os.File

// importFIFO rebuilds the shim's side of a client's output FIFO, attached.
func (o *OutputState) importFIFO(get adoptFunc) *clientFIFO {
	f := newClientFIFO(get(o.Handle, o.Stream+" fifo handle", held))
	f.w, f.keep = get(o.FIFO, o.Stream+" fifo", polled), get(o.Keep, o.Stream+" fifo reader", held)
	close(f.opened)
	return f
}

// importConsole rebuilds a handed-over terminal and starts its relays, unless
// adopting a descriptor failed (*ferr, set by get) or the master cannot be
// driven: then it starts nothing and returns the error.
func importConsole(p *Pipes, t *TerminalState, get adoptFunc, ferr *error) error {
	p.terminal = true
	p.master = get(t.Master, "pty master", polled)
	p.hungUp.Store(t.HungUp)
	if o := t.Out; o != nil {
		f := o.importFIFO(get)
		p.consoleDst = f
		p.toClose = append(p.toClose, f)
	}
	if l := t.Log; l != nil {
		// A logger's pipe is written through the poller, a log file is not.
		f := get(l.File, "terminal log", l.Pipe)
		p.consoleDst = readyFile{f}
		p.toClose = append(p.toClose, f)
	}
	var inCarry []byte
	if in := t.Stdin; in != nil {
		p.stdinReader, p.stdinWriter = get(in.FIFO, "stdin fifo", polled), get(in.Writer, "stdin fifo writer", held)
		p.toClose = append(p.toClose, p.stdinReader)
		inCarry = in.Carry
	}
	if *ferr != nil {
		return *ferr
	}
	if t.Stdin != nil && t.StdinEnded {
		// No input relay runs here: its state is kept for the next export
		// (an ended input must not be ended again by a later binary).
		p.stdinHalt = stoppedHalter(inCarry, true, t.StdinLast, t.StdinEOFPending)
	}
	if t.OutEnded {
		p.consoleHalt = stoppedHalter(nil, true, 0, false)
		// The output is over (the process hung up), but whatever still
		// holds the terminal may read: the input runs on, as in
		// restartConsole.
		if t.Stdin != nil && !t.StdinEnded {
			p.runConsoleInput(inCarry, t.StdinLast, t.StdinEOFPending)
		}
		return nil
	}
	if t.Stdin != nil && t.StdinEnded {
		p.resumeEndOfInputWatch() // ptyend.go
	}
	m, err := newRawFile(p.master)
	if err != nil {
		return fmt.Errorf("pty master: %w", err)
	}
	var outCarry []byte
	switch {
	case t.Out != nil:
		outCarry = t.Out.Carry
	case t.Log != nil:
		outCarry = t.Log.Carry
	}
	p.outputs.Add(1) // the console relay's, as Open reserves it
	p.runConsole(m, outCarry, inCarry, t.StdinLast, t.StdinEOFPending, t.Stdin != nil && !t.StdinEnded)
	return nil
}

// adoptLogger takes over a running binary:// logger whose exit claim
// reports.
func (p *Pipes) adoptLogger(pid int, claim func(int, func(int))) {
	proc, _ := os.FindProcess(pid) // never fails on Unix
	exit, exited := p.expectLoggerExit()
	p.logger, p.loggerExit = proc, exit
	claim(pid, exited)
}
