package io

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"
)

// consoleReceiveTimeout bounds the wait for the runtime to send the pty
// master after its create/exec returned (it sends before returning).
var consoleReceiveTimeout = 10 * time.Second

// ConsoleSocket is where the runtime sends a terminal's pty master
// (--console-socket). It lives in the shim's socket directory: a bundle path
// can be too long for a socket name.
type ConsoleSocket struct {
	l    *net.UnixListener
	path string
}

// NewConsoleSocket listens on a fresh socket in dir.
func NewConsoleSocket(dir string) (*ConsoleSocket, error) {
	var b [8]byte
	_, _ = rand.Read(b[:])
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("console socket directory: %w", err)
	}
	path := filepath.Join(dir, "pty-"+hex.EncodeToString(b[:]))
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("console socket: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		l.Close()
		return nil, fmt.Errorf("console socket: %w", err)
	}
	return &ConsoleSocket{l: l, path: path}, nil
}

// Path is the socket's path, for the runtime's --console-socket.
func (s *ConsoleSocket) Path() string { return s.path }

// ReceiveMaster accepts the runtime's connection and takes the pty master fd
// it sent.
func (s *ConsoleSocket) ReceiveMaster() (*os.File, error) {
	deadline := time.Now().Add(consoleReceiveTimeout)
	_ = s.l.SetDeadline(deadline)
	conn, err := s.l.AcceptUnix()
	if err != nil {
		return nil, fmt.Errorf("accept console socket: %w", err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(deadline) // a runtime that connects and sends nothing
	name := make([]byte, 4096)
	oob := make([]byte, unix.CmsgSpace(4))
	n, oobn, _, _, err := conn.ReadMsgUnix(name, oob)
	if err != nil {
		return nil, fmt.Errorf("receive pty master: %w", err)
	}
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil || len(msgs) != 1 {
		return nil, fmt.Errorf("receive pty master: no control message (%v)", err)
	}
	fds, err := unix.ParseUnixRights(&msgs[0])
	if err != nil || len(fds) != 1 {
		for _, fd := range fds {
			unix.Close(fd)
		}
		return nil, fmt.Errorf("receive pty master: want one fd (%v)", err)
	}
	unix.CloseOnExec(fds[0])
	// Non-blocking before NewFile: the file is then driven by Go's poller.
	if err := unix.SetNonblock(fds[0], true); err != nil {
		unix.Close(fds[0])
		return nil, fmt.Errorf("pty master: %w", err)
	}
	return os.NewFile(uintptr(fds[0]), string(name[:n])), nil
}

// Close removes the socket.
func (s *ConsoleSocket) Close() {
	s.l.Close()
	os.Remove(s.path)
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
	case isLoggerURI(cfg.Stdout):
		return p.openLogger(cfg.Stdout, env)
	case hasScheme(cfg.Stdout, "file"):
		o, err := ParseFileURI(cfg.Stdout)
		if err != nil {
			return err
		}
		if o.CRI || o.MaxSize > 0 || o.Rate > 0 {
			return fmt.Errorf("terminal output: file:// format, rotation and rate options apply to non-terminal processes: %w", errdefs.ErrInvalidArgument)
		}
		if namesFIFO(o) {
			dst, err := openOutput(o.Path, "stdout", p.attachTimeout)
			if err != nil {
				return err
			}
			p.consoleOut = dst
			p.toClose = append(p.toClose, dst)
			break
		}
		dst, err := openLogFile(o.Path)
		if err != nil {
			return fmt.Errorf("stdout: %w", err)
		}
		p.consoleOut = readyFile{dst}
		p.toClose = append(p.toClose, dst)
	case cfg.Stdout != "":
		dst, err := openOutput(cfg.Stdout, "stdout", p.attachTimeout)
		if err != nil {
			return err
		}
		p.consoleOut = dst
		p.toClose = append(p.toClose, dst)
	}
	return nil
}

// AttachConsole connects a terminal process's pty master (from the runtime,
// see ConsoleSocket) to the client: master -> stdout, stdin -> master. The
// master is driven by Go's poller like every other relay, so a keystroke
// costs one wake-up of the relay's goroutine (no epoll thread of its own).
func (p *Pipes) AttachConsole(master *os.File) error {
	m, err := newRawFile(master)
	if err != nil {
		master.Close()
		return fmt.Errorf("pty master: %w", err)
	}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		master.Close()
		return errors.New("stdio already closed")
	}
	p.master = master
	p.consoleDst = p.consoleOut
	p.consoleOut = nil
	p.mu.Unlock()
	p.runConsole(m, nil, nil, 0, false, true)
	return nil
}

// runConsole starts the terminal's two relays (master -> client, client's
// stdin -> master), each writing its carry first (bytes a halted relay had
// read; see handover.go). inLast is the last byte a halted input relay had
// written (0: none); with eofPending, that relay had read the end of its
// input and inCarry is the end-of-file characters it had yet to write.
func (p *Pipes) runConsole(m *rawFile, outCarry, inCarry []byte, inLast byte, eofPending, withStdin bool) {
	if p.hungUp.Load() {
		// The process exited before a halt (whose end cleared the read
		// deadline Hangup set) or before the previous binary handed the
		// pty over: wake the relay to drain and end, as Hangup does.
		_ = p.master.SetReadDeadline(time.Now())
	}
	dst := p.consoleDst
	p.consoleHalt = newHalter(outCarry)
	h := p.consoleHalt
	go func() {
		var out *os.File
		if dst != nil {
			out, _ = dst.ready() // nil: no client came; drain the pty
		}
		bp := copyBufs.Get().(*[]byte)
		defer copyBufs.Put(bp)
		// The stall policy is for a client's FIFO. A binary:// logger's
		// pipe (a readyFile, like a log file) is waited on, as the process
		// itself waits on it without a terminal: nothing is discarded.
		_, toLogger := dst.(readyFile)
		err := p.relayTerminalOutput(m, out, *bp, h, !toLogger)
		h.finish(err)
		if errors.Is(err, errHalted) {
			return // the pty and the client's FIFO go to whoever continues
		}
		defer p.outputs.Done() // reserved by Open
		if dst != nil {
			dst.Close()
		}
	}()
	if withStdin {
		p.runConsoleInput(inCarry, inLast, eofPending)
	}
}

// runConsoleInput starts a terminal's input relay (stdin to the pty), after
// a halt with what it carried (inCarry, the last byte written, an end of
// input still to write).
func (p *Pipes) runConsoleInput(inCarry []byte, inLast byte, eofPending bool) {
	if p.stdinReader != nil {
		p.stdinHalt = newHalter(inCarry)
		hin := p.stdinHalt
		hin.eofPending = eofPending
		go func() {
			last := inLast
			if last == 0 {
				last = '\n' // nothing written: at the start of a line
			}
			var err error
			// fresh: no watch runs for this end of input yet. One written
			// here, whether this relay read it or a halted one had it
			// pending (whose watch never started), gets one.
			fresh := hin.eofPending
			if !hin.eofPending {
				bp := copyBufs.Get().(*[]byte)
				err = copyRawHalting(p.master, p.stdinReader, *bp, hin, &last)
				copyBufs.Put(bp)
				if err == nil {
					// End of input (CloseIO): send the terminal's
					// end-of-file character instead of hanging up, which
					// would cut off output the process has yet to write.
					// In canonical mode it ends input only at the start of
					// a line; after a partial line the first one just
					// hands that line over, so a second one follows.
					// A raw terminal would keep the character as a
					// byte of its input: the watch's hang-up alone
					// ends it (ptyend.go).
					fresh = true
					hin.eofPending = true
					switch {
					case rawInput(p.master):
						hin.carry = nil
					case last != '\n' && last != '\r':
						hin.carry = []byte{4, 4}
					default:
						hin.carry = []byte{4}
					}
				}
			}
			if err == nil {
				err = p.writeEndOfInput(hin)
			}
			if fresh && err == nil {
				go p.watchEndOfInput(p.master) // ptyend.go
			}
			hin.lastIn = last // for a successor (the halter is ours until finish)
			hin.finish(err)
		}()
	}
}

// writeEndOfInput writes the end-of-file characters in h's carry to the
// pty. Like any relay's write, a halt stops it, and what is left stays in
// the carry for whoever goes on (errHalted): the input is not ended until
// they are written. A pty that refuses them (the process gone) ends it.
func (p *Pipes) writeEndOfInput(h *halter) error {
	w, err := newRawFile(p.master)
	if err != nil {
		return nil
	}
	if err := w.writeHalting(p.master, h.takeCarry(), h, nil); err != nil {
		if errors.Is(err, errHalted) {
			return err
		}
		slog.Debug("terminal end of input not written", "error", err)
	}
	return nil
}

// relayTerminalOutput copies the master to dst (nil: discard) until the pty
// is hung up: reading returns EIO once every holder of its other side is
// gone, after whatever the process wrote before. After Hangup it ends as soon
// as nothing is buffered, instead of waiting for a holder that may never
// leave. With stallable, a dst that is a pipe (a client's FIFO) that stops
// being read gets the stall policy (stall.go).
//
// A halt (h, for an in-place upgrade) stops it between two chunks, or in the
// middle of a write to a full client FIFO: what is not written yet becomes
// h's carry, and the relay returns errHalted. A carry it starts with goes
// out first.
func (p *Pipes) relayTerminalOutput(master *rawFile, dst *os.File, buf []byte, h *halter, stallable bool) error {
	var out func([]byte) error
	var stall *terminalStall
	if dst != nil {
		if w, err := newRawFile(dst); err == nil && isPipe(dst) {
			var own func() time.Time
			if stallable {
				if stall = newTerminalStall(p, dst, w); stall != nil {
					own = stall.deadline
				}
			}
			out = func(b []byte) error { return w.writeHalting(dst, b, h, own) }
		} else {
			out = func(b []byte) error { _, err := dst.Write(b); return err } // a log file
		}
	}
	deliver := func(b []byte) error {
		if out == nil {
			return nil
		}
		if stall != nil && stall.discarding {
			stall.discard(b)
			return nil
		}
		if err := out(b); err != nil {
			if errors.Is(err, errHalted) { // what the FIFO had no room for is the carry
				return err
			}
			if stall != nil && stall.stalled(err) {
				return nil // the rest of b was discarded, and so is what follows
			}
			out = nil // the client is gone: keep draining the pty
			return nil
		}
		p.moved.Add(uint64(len(b)))
		return nil
	}
	if carry := h.takeCarry(); len(carry) > 0 {
		if err := deliver(carry); err != nil {
			return err
		}
	}
	for {
		if h.commit() {
			return errHalted
		}
		n, err := master.read(buf)
		if n > 0 {
			if derr := deliver(buf[:n]); derr != nil {
				return derr
			}
		}
		switch {
		case err == nil:
		case errors.Is(err, os.ErrDeadlineExceeded) && h.commit():
			return errHalted
		case errors.Is(err, os.ErrDeadlineExceeded) && p.hungUp.Load():
			// Hangup woke us: drain what is buffered, then end.
			for n := master.readNow(buf); n > 0; n = master.readNow(buf) {
				if derr := deliver(buf[:n]); derr != nil {
					return derr
				}
			}
			return nil
		case errors.Is(err, os.ErrDeadlineExceeded):
			// A halt's wake-up, the halt withdrawn meanwhile.
		default:
			return nil // EIO (hung up), end of file, or closed
		}
	}
}

// Hangup tells the terminal relay that the process has exited: from then on
// reading the pty drains what is buffered and ends at the hang-up, instead of
// waiting for a writer that may never come back. No-op without a terminal.
func (p *Pipes) Hangup() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.master != nil && p.hungUp.CompareAndSwap(false, true) {
		_ = p.master.SetReadDeadline(time.Now()) // wakes the relay
	}
}

// Resize sets the terminal's window size; a process without one ignores it.
func (p *Pipes) Resize(width, height uint32) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.master == nil {
		return nil
	}
	rc, err := p.master.SyscallConn()
	if err != nil {
		return err
	}
	ws := &unix.Winsize{Col: uint16(width), Row: uint16(height)}
	var ierr error
	if err := rc.Control(func(fd uintptr) { ierr = unix.IoctlSetWinsize(int(fd), unix.TIOCSWINSZ, ws) }); err != nil {
		return err
	}
	return ierr
}
