package io

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	stdio "io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/containerd/console"
	"golang.org/x/sys/unix"
)

// consoleReceiveTimeout bounds the wait for the runtime to send the pty
// master after its create/exec returned (it sends before returning).
const consoleReceiveTimeout = 10 * time.Second

// Consoles relays pty masters through one epoll set shared by every terminal
// of the daemon (one goroutine, not one per terminal). Create it once per
// daemon; the zero value is ready and starts its poller on first use.
type Consoles struct {
	mu sync.Mutex
	ep *console.Epoller
}

func (c *Consoles) add(master *os.File) (*console.EpollConsole, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ep == nil {
		ep, err := console.NewEpoller()
		if err != nil {
			return nil, fmt.Errorf("console epoller: %w", err)
		}
		go ep.Wait()
		c.ep = ep
	}
	con, err := console.ConsoleFromFile(master)
	if err != nil {
		return nil, fmt.Errorf("pty master: %w", err)
	}
	return c.ep.Add(con)
}

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
	_ = s.l.SetDeadline(time.Now().Add(consoleReceiveTimeout))
	conn, err := s.l.AcceptUnix()
	if err != nil {
		return nil, fmt.Errorf("accept console socket: %w", err)
	}
	defer conn.Close()
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
	return os.NewFile(uintptr(fds[0]), string(name[:n])), nil
}

// Close removes the socket.
func (s *ConsoleSocket) Close() {
	s.l.Close()
	os.Remove(s.path)
}

// AttachConsole connects a terminal process's pty master (from the runtime)
// to the client: master -> stdout, stdin -> master.
func (p *Pipes) AttachConsole(cs *Consoles, master *os.File) error {
	ec, err := cs.add(master)
	if err != nil {
		master.Close()
		return err
	}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		ec.Close()
		return errors.New("stdio already closed")
	}
	p.console = ec
	p.consoleEp = cs.ep
	dst := p.consoleOut
	p.consoleOut = nil
	p.mu.Unlock()

	go func() {
		defer p.outputs.Done() // reserved by Open
		var out *os.File
		if dst != nil {
			out, _ = dst.ready()
		}
		if out == nil {
			discard(ec)
			if dst != nil {
				dst.Close()
			}
			return
		}
		bp := copyBufs.Get().(*[]byte)
		defer copyBufs.Put(bp)
		// Reading ends with EIO once every holder of the pty's other side
		// is gone; whatever the process wrote before is read first.
		_, _ = stdio.CopyBuffer(countingWriter{out, &stallPolicy{moved: &p.moved}}, readerOnly{ec}, *bp)
		dst.Close()
	}()
	if p.stdinReader != nil {
		go func() {
			bp := copyBufs.Get().(*[]byte)
			defer copyBufs.Put(bp)
			if _, err := stdio.CopyBuffer(writerOnly{ec}, readerOnly{p.stdinReader}, *bp); err == nil {
				// End of input (CloseIO): send the terminal's end-of-file
				// character instead of hanging up, which would cut off
				// output the process has yet to write.
				_, _ = ec.Write([]byte{4})
			}
		}()
	}
	return nil
}

// Hangup tells the terminal relay that the process has exited: from then on
// reading the pty drains what is buffered and ends at the hang-up, instead of
// waiting for a writer that may never come back. No-op without a terminal.
func (p *Pipes) Hangup() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.console != nil && p.consoleEp != nil {
		_ = p.console.Shutdown(p.consoleEp.CloseConsole)
	}
}

// Resize sets the terminal's window size; a process without one ignores it.
func (p *Pipes) Resize(width, height uint32) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.console == nil {
		return nil
	}
	return p.console.Resize(console.WinSize{Width: uint16(width), Height: uint16(height)})
}

type readerOnly struct{ stdio.Reader }
