package handover

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"time"
)

// ttrpc's framing: every message starts with a 10-byte header: payload
// length and stream id (big endian), message type, flags.
const (
	headerLen    = 10
	typeRequest  = 1
	typeResponse = 2
)

// Conn is a server-side ttrpc connection that can be paused between two
// messages and handed over.
//
// Reads never return bytes past the end of the message being read, so the
// server's read-ahead buffer never holds the start of a message it has not
// begun to handle: when the server's reader waits in Read at a message
// boundary, everything it was given is being handled, and everything else is
// either in the socket or in this Conn's carry (a partly read header).
// Requests are counted when their header is delivered and answered when their
// response's last byte is written; a pause completes once none is open.
//
// Locking: the server reads from one goroutine and writes from one other; the
// read state (hdr, hdrN, out, bodyLeft) belongs to the reader, the write state
// (w*) to the writer. mu guards paused, parked, open and closed; cond (on mu)
// signals their changes.
type Conn struct {
	*net.UnixConn

	// reader's state
	hdr      [headerLen]byte
	hdrN     int    // bytes of hdr read from the socket
	out      []byte // header bytes read and not yet given to the server
	bodyLeft uint32 // payload bytes of the current message not yet given

	// writer's state
	whdr      [headerLen]byte
	whdrN     int
	wbodyLeft uint32
	wtype     byte

	mu     sync.Mutex
	cond   *sync.Cond
	paused bool // no new message is to be given to the server
	parked bool // the reader waits at a message boundary because of the pause
	open   int  // requests given to the server and not answered yet
	closed bool
}

// NewConn wraps a connection accepted (or handed over) on a unix socket.
// carry is what a previous owner had read from the socket but not handled:
// it is given to the server first.
func NewConn(c *net.UnixConn, carry []byte) *Conn {
	cn := &Conn{UnixConn: c}
	cn.cond = sync.NewCond(&cn.mu)
	if len(carry) > 0 {
		cn.hdrN = copy(cn.hdr[:], carry)
		if len(carry) > headerLen {
			// A carry is never more than a partial header: Export
			// refuses to hand over a connection in the middle of a message.
			panic("handover: carry longer than a message header")
		}
	}
	return cn
}

// Read gives the server at most the rest of the current message.
func (c *Conn) Read(p []byte) (int, error) {
	for {
		if len(c.out) > 0 {
			n := copy(p, c.out)
			c.out = c.out[n:]
			return n, nil
		}
		if c.bodyLeft > 0 {
			if uint32(len(p)) > c.bodyLeft {
				p = p[:c.bodyLeft]
			}
			n, err := c.readSocket(p)
			c.bodyLeft -= uint32(n)
			if n > 0 || err != nil {
				return n, err
			}
			continue
		}
		// A message boundary: wait here while paused.
		if err := c.waitUnpaused(); err != nil {
			return 0, err
		}
		n, err := c.readSocket(c.hdr[c.hdrN:])
		c.hdrN += n
		if err != nil {
			if isTimeout(err) {
				continue // a pause interrupted the wait for the next header
			}
			return 0, err
		}
		if c.hdrN < headerLen {
			continue
		}
		c.hdrN = 0
		c.bodyLeft = binary.BigEndian.Uint32(c.hdr[:4])
		if c.hdr[8] == typeRequest {
			c.mu.Lock()
			c.open++
			c.mu.Unlock()
		}
		c.out = c.hdr[:]
	}
}

// readSocket reads from the socket. A deadline set by Pause interrupts a
// wait at a message boundary; inside a message the read goes on (the pause
// waits for the message to end), so the deadline is cleared and retried.
func (c *Conn) readSocket(p []byte) (int, error) {
	for {
		n, err := c.UnixConn.Read(p)
		if err == nil || !isTimeout(err) {
			return n, err
		}
		atBoundary := c.bodyLeft == 0 && len(c.out) == 0
		if n > 0 || atBoundary {
			return n, err
		}
		_ = c.UnixConn.SetReadDeadline(time.Time{})
	}
}

// waitUnpaused parks the reader while a pause is on.
func (c *Conn) waitUnpaused() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	for c.paused && !c.closed {
		c.parked = true
		c.cond.Broadcast()
		c.cond.Wait()
	}
	c.parked = false
	if c.closed {
		return net.ErrClosed
	}
	return nil
}

// Write passes the server's bytes on and counts the responses it completes.
func (c *Conn) Write(p []byte) (int, error) {
	n, err := c.UnixConn.Write(p)
	c.account(p[:n])
	return n, err
}

// account follows the messages in the written bytes.
func (c *Conn) account(b []byte) {
	for len(b) > 0 {
		if c.wbodyLeft > 0 {
			k := min(uint32(len(b)), c.wbodyLeft)
			c.wbodyLeft -= k
			b = b[k:]
		} else {
			k := copy(c.whdr[c.whdrN:], b)
			c.whdrN += k
			b = b[k:]
			if c.whdrN < headerLen {
				return
			}
			c.whdrN = 0
			c.wbodyLeft = binary.BigEndian.Uint32(c.whdr[:4])
			c.wtype = c.whdr[8]
		}
		if c.wbodyLeft == 0 && c.whdrN == 0 && c.wtype == typeResponse {
			c.wtype = 0
			c.mu.Lock()
			c.open--
			c.cond.Broadcast()
			c.mu.Unlock()
		}
	}
}

// Pause stops giving the server new messages and waits until the reader is
// parked at a message boundary with every request answered. A connection
// the client closed counts as paused. On timeout the pause stays on; call
// Resume to undo it.
func (c *Conn) Pause(timeout time.Duration) error {
	c.mu.Lock()
	c.paused = true
	c.mu.Unlock()
	_ = c.UnixConn.SetReadDeadline(time.Now()) // wake a reader waiting for a header
	deadline := time.Now().Add(timeout)
	timer := time.AfterFunc(timeout, func() {
		c.mu.Lock()
		c.cond.Broadcast()
		c.mu.Unlock()
	})
	defer timer.Stop()
	c.mu.Lock()
	defer c.mu.Unlock()
	for !c.closed && !(c.parked && c.open == 0) {
		if time.Now().After(deadline) {
			return fmt.Errorf("connection not idle within %v (%d requests unanswered, reader parked: %v)", timeout, c.open, c.parked)
		}
		c.cond.Wait()
	}
	return nil
}

// Resume undoes Pause: the server is given messages again.
func (c *Conn) Resume() {
	_ = c.UnixConn.SetReadDeadline(time.Time{})
	c.mu.Lock()
	c.paused = false
	c.cond.Broadcast()
	c.mu.Unlock()
}

// Close closes the connection and releases a parked reader.
func (c *Conn) Close() error {
	c.mu.Lock()
	c.closed = true
	c.cond.Broadcast()
	c.mu.Unlock()
	return c.UnixConn.Close()
}

// ConnState is a paused connection as handed over: its socket, by
// descriptor number in the successor, and the partial header read from it.
type ConnState struct {
	FD    int    `json:"fd"`
	Carry []byte `json:"carry,omitempty"`
}

// Export hands over a paused connection: the socket's descriptor (a
// duplicate, kept open across execve, see FDs) and its carry. Nil when the
// client has closed it meanwhile (nothing to hand over).
func (c *Conn) Export(fds *FDs) (*ConnState, error) {
	c.mu.Lock()
	ok := c.paused && (c.parked || c.closed) && c.open == 0
	closed := c.closed
	c.mu.Unlock()
	if !ok {
		return nil, errors.New("handover: connection exported without a completed pause")
	}
	if closed {
		return nil, nil
	}
	f, err := c.UnixConn.File()
	if err != nil {
		return nil, fmt.Errorf("handover: connection socket: %w", err)
	}
	fd, err := fds.Keep(f)
	if err != nil {
		return nil, err
	}
	return &ConnState{FD: fd, Carry: append([]byte(nil), c.hdr[:c.hdrN]...)}, nil
}

// ImportConn makes a connection of a handed-over socket.
func ImportConn(st ConnState) (*Conn, error) {
	f := os.NewFile(uintptr(st.FD), "handed-over connection")
	if f == nil {
		return nil, fmt.Errorf("handover: connection fd %d is not open", st.FD)
	}
	defer f.Close() // FileConn duplicates it
	nc, err := net.FileConn(f)
	if err != nil {
		return nil, fmt.Errorf("handover: connection fd %d: %w", st.FD, err)
	}
	uc, ok := nc.(*net.UnixConn)
	if !ok {
		nc.Close()
		return nil, fmt.Errorf("handover: connection fd %d is not a unix socket", st.FD)
	}
	if len(st.Carry) >= headerLen {
		uc.Close()
		return nil, fmt.Errorf("handover: connection fd %d: carry of %d bytes is not a partial header", st.FD, len(st.Carry))
	}
	return NewConn(uc, st.Carry), nil
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
