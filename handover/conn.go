package handover

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/containerd/ttrpc"
	"google.golang.org/protobuf/proto"

	"github.com/example/containerd-shim-example-v2/internal/condwait"
	"github.com/example/containerd-shim-example-v2/internal/ttrpcframe"
)

const (
	// maxKept bounds the copy kept of a request that may be parked (see
	// Parkable): a Wait request is a few hundred bytes at most, and larger
	// requests (a Create with its options, an Exec with its spec) are not
	// copied at all.
	maxKept = 4 << 10
)

// Parkable reports whether a request may still be unanswered when a pause
// completes: a long poll that the successor answers instead (containerd's
// Wait, which returns only when a process exits). Its bytes are kept and
// handed over, and the successor's server is given them again first.
func Parkable(service, method string) bool {
	return method == "Wait" || method == "WaitSandbox"
}

// Conn is a server-side ttrpc connection that can be paused between two
// messages and handed over.
//
// Reads never return bytes past the end of the message being read, so the
// server's read-ahead buffer never holds the start of a message it has not
// begun to handle: when the server's reader waits in Read at a message
// boundary, everything it was given is being handled, and everything else is
// either in the socket or in this Conn (bytes read along with the last
// message, a partly read header), which an upgrade hands over. Requests are
// tracked from their header to their response's last byte; a pause
// completes once every open request is parkable (see Parkable): those are
// handed over and replayed.
//
// Locking: the server reads from one goroutine at a time (it hands the
// reading on with a happens-before edge) and writes from others; the read
// state (prefix, hdr, hdrN, out, bodyLeft, cur) belongs to the reader, the
// write state (w*) to the writer, which holds wmu for each write (Export
// holds it too: see exported). mu guards paused, parked, writing, reqs and
// closed; cond (on mu) signals their changes. wmu is taken before mu, never
// after.
type Conn struct {
	*net.UnixConn

	// reader's state
	prefix   []byte // handed-over bytes, read before the socket
	hdr      [ttrpcframe.HeaderLen]byte
	hdrN     int    // bytes of hdr read
	out      []byte // header bytes read and not yet given to the server
	bodyLeft uint32 // payload bytes of the current message not yet given
	cur      *request

	// writer's state
	whdr      [ttrpcframe.HeaderLen]byte
	whdrN     int
	wbodyLeft uint32

	// wmu serializes writes with Export. Once exported, the parked requests
	// belong to the successor, which is given them again and answers them:
	// an answer this binary writes after that (an exit reaped just before
	// the reaper's pause, answered by a goroutine that ran late) would be a
	// second one. Such writes are held instead, and written if the handover
	// is undone (Resume); at execve they are dropped with the process.
	wmu      sync.Mutex
	exported atomic.Bool // set and cleared under wmu; read alone by Resume
	held     []byte      // under wmu

	mu      sync.Mutex
	cond    *sync.Cond
	paused  bool // no new message is to be given to the server
	parked  bool // the reader waits at a message boundary because of the pause
	writing bool // a Write is in the kernel (set and cleared under wmu too)
	reqs    map[uint32]*request
	closed  bool

	owner *Conns // the registry it is in (Conns.Handshaker), or nil
}

// request is one request given to the server and not answered yet.
type request struct {
	frame    []byte // header and body as received (nil when too large to park)
	complete bool   // its body was given entirely
	decided  bool   // parkable is known (decided at the first pause that sees it)
	parkable bool
}

// isParkable decodes the request's method once, off the request path (only
// a pause asks). Called with the Conn's mu held, after complete.
func (r *request) isParkable() bool {
	if !r.decided {
		r.decided = true
		var req ttrpc.Request
		if r.frame != nil && proto.Unmarshal(r.frame[ttrpcframe.HeaderLen:], &req) == nil {
			r.parkable = Parkable(req.Service, req.Method)
		}
		if !r.parkable {
			r.frame = nil
		}
	}
	return r.parkable
}

// NewConn wraps a connection accepted (or handed over) on a unix socket.
// carry is what a previous owner had read from the socket and not answered
// (whole parked requests, then at most a partial header): it is given to
// the server first.
func NewConn(c *net.UnixConn, carry []byte) *Conn {
	cn := &Conn{UnixConn: c, prefix: carry, reqs: make(map[uint32]*request)}
	cn.cond = sync.NewCond(&cn.mu)
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
			n, err := c.readMessage(p)
			c.bodyLeft -= uint32(n)
			c.keep(p[:n])
			if n > 0 || err != nil {
				return n, err
			}
			continue
		}
		// A message boundary: wait here while paused.
		if err := c.waitUnpaused(); err != nil {
			return 0, err
		}
		if c.hdrN == 0 && len(c.prefix) == 0 && len(p) >= ttrpcframe.HeaderLen {
			// The common case: one read of the socket brings the header
			// and (all or part of) the body, as a plain connection would.
			n, err := c.readMessage(p)
			if n > 0 {
				if k := c.split(p, n); k > 0 {
					return k, nil
				}
				continue // only part of a header came: read the rest into hdr
			}
			if err != nil && !isTimeout(err) {
				return 0, err
			}
			continue // a pause interrupted the wait for the next message
		}
		n, err := c.readMessage(c.hdr[c.hdrN:])
		c.hdrN += n
		if err != nil {
			if isTimeout(err) {
				continue // a pause interrupted the wait for the next header
			}
			return 0, err
		}
		if c.hdrN < ttrpcframe.HeaderLen {
			continue
		}
		c.hdrN = 0
		c.begin(c.hdr[:])
		c.out = c.hdr[:]
	}
}

// split handles n bytes read at a message boundary into p: it gives the
// server at most the current message (whose header they start with) and
// keeps the rest for the next reads. Fewer bytes than a header are kept
// as a partial header, and nothing is given yet.
func (c *Conn) split(p []byte, n int) int {
	if n < ttrpcframe.HeaderLen {
		c.hdrN = copy(c.hdr[:], p[:n])
		return 0
	}
	c.begin(p[:ttrpcframe.HeaderLen])
	body := min(uint32(n-ttrpcframe.HeaderLen), c.bodyLeft)
	k := ttrpcframe.HeaderLen + int(body)
	c.bodyLeft -= body
	c.keep(p[ttrpcframe.HeaderLen:k])
	if k < n {
		c.prefix = append(c.prefix, p[k:n]...) // the start of the next message(s)
	}
	return k
}

// begin starts tracking the message whose header is hdr.
func (c *Conn) begin(hdr []byte) {
	c.bodyLeft = binary.BigEndian.Uint32(hdr[:4])
	c.cur = nil
	if hdr[8] != ttrpcframe.TypeRequest {
		return
	}
	r := &request{}
	if c.bodyLeft <= maxKept {
		r.frame = append(make([]byte, 0, ttrpcframe.HeaderLen+c.bodyLeft), hdr[:ttrpcframe.HeaderLen]...)
	}
	c.cur = r
	c.mu.Lock()
	c.reqs[binary.BigEndian.Uint32(hdr[4:8])] = r
	c.mu.Unlock()
	c.keep(nil)
}

// keep adds given body bytes to the current request's copy and marks it
// complete at its end.
func (c *Conn) keep(b []byte) {
	r := c.cur
	if r == nil {
		return
	}
	if r.frame != nil {
		r.frame = append(r.frame, b...)
	}
	if c.bodyLeft > 0 {
		return
	}
	c.cur = nil
	c.mu.Lock()
	r.complete = true
	c.cond.Broadcast()
	c.mu.Unlock()
}

// readMessage reads handed-over bytes first, then the socket. A deadline
// set by Pause interrupts a wait at a message boundary; inside a message the
// read goes on (the pause waits for the message to end).
func (c *Conn) readMessage(p []byte) (int, error) {
	if len(c.prefix) > 0 {
		n := copy(p, c.prefix)
		c.prefix = c.prefix[n:]
		return n, nil
	}
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
	for c.paused && !c.closed && len(c.prefix) == 0 {
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

// Buffered is how many bytes of the next messages the Conn holds that the
// socket no longer does (handed-over bytes, part of a header). A server that
// reads only once the socket is readable must read these first. It is the
// reader's state: only the reader may ask.
func (c *Conn) Buffered() int { return len(c.prefix) + c.hdrN }

// Rest tells the Conn that its server stopped reading at a message boundary
// and reads again only once the socket is readable (or Buffered is not 0):
// the reader is parked for a pause without being woken to find out. A read
// that passes the boundary unpaused ends the rest.
func (c *Conn) Rest() {
	c.mu.Lock()
	c.parked = true
	c.cond.Broadcast()
	c.mu.Unlock()
}

// Write passes the server's bytes on and closes the requests it answers.
func (c *Conn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.exported.Load() {
		c.held = append(c.held, p...)
		return len(p), nil
	}
	c.setWriting(true)
	n, err := c.UnixConn.Write(p)
	c.account(p[:n])
	c.setWriting(false)
	return n, err
}

// setWriting records a write entering or leaving the kernel. A pause waits
// for none: an answer to a client that does not read blocks its write, and
// Export, which must take wmu, would then wait for it with the daemon paused.
func (c *Conn) setWriting(on bool) {
	c.mu.Lock()
	c.writing = on
	if !on {
		c.cond.Broadcast()
	}
	c.mu.Unlock()
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
			if c.whdrN < ttrpcframe.HeaderLen {
				return
			}
			c.whdrN = 0
			c.wbodyLeft = binary.BigEndian.Uint32(c.whdr[:4])
		}
		if c.wbodyLeft == 0 && c.whdrN == 0 && c.whdr[8] == ttrpcframe.TypeResponse {
			c.whdr[8] = 0
			c.mu.Lock()
			delete(c.reqs, binary.BigEndian.Uint32(c.whdr[4:8]))
			c.cond.Broadcast()
			c.mu.Unlock()
		}
	}
}

// idle: every open request may stay open (parkable). Called with mu held.
func (c *Conn) idleLocked() (bool, int) {
	busy := 0
	for _, r := range c.reqs {
		if !r.complete || !r.isParkable() {
			busy++
		}
	}
	return busy == 0, busy
}

// Pause stops giving the server new messages and waits until the reader is
// parked at a message boundary, every open request is parkable and no
// answer is being written. A connection the client closed counts as
// paused. On timeout the pause stays on; call Resume to undo it.
func (c *Conn) Pause(timeout time.Duration) error {
	c.mu.Lock()
	c.paused = true
	c.mu.Unlock()
	_ = c.UnixConn.SetReadDeadline(time.Now()) // wake a reader waiting for a header
	c.mu.Lock()
	defer c.mu.Unlock()
	paused := func() bool {
		idle, _ := c.idleLocked()
		return c.closed || (c.parked && idle && !c.writing)
	}
	if !condwait.Until(c.cond, timeout, paused) {
		_, busy := c.idleLocked()
		return fmt.Errorf("connection not idle within %v (%d requests being served, reader parked: %v, an answer being written: %v)",
			timeout, busy, c.parked, c.writing)
	}
	return nil
}

// resumeWriteTimeout bounds Resume's write of the answers held since the
// export (a variable for tests).
var resumeWriteTimeout = time.Second

// Resume undoes Pause (and Export): the server is given messages again,
// and what it wrote since the export goes out.
func (c *Conn) Resume() {
	// Only an exported connection needs wmu, and no write holds it then: a
	// pause undone before any export must not wait for a write to a client
	// that does not read.
	if c.exported.Load() {
		c.wmu.Lock()
		c.exported.Store(false)
		if len(c.held) > 0 {
			// Bounded: the connections after this one and the listener are
			// resumed only after it, and a client that does not read would
			// hold them all. Cut short, an answer cannot be completed on
			// this stream: the connection ends, as after any failed write.
			_ = c.UnixConn.SetWriteDeadline(time.Now().Add(resumeWriteTimeout))
			n, err := c.UnixConn.Write(c.held)
			_ = c.UnixConn.SetWriteDeadline(time.Time{})
			c.account(c.held[:n])
			c.held = nil
			if err != nil {
				_ = c.UnixConn.Close()
			}
		}
		c.wmu.Unlock()
	}
	_ = c.UnixConn.SetReadDeadline(time.Time{})
	c.mu.Lock()
	c.paused = false
	c.cond.Broadcast()
	c.mu.Unlock()
}

// Close closes the connection, releases a parked reader and leaves the
// registry.
func (c *Conn) Close() error {
	c.mu.Lock()
	c.closed = true
	c.cond.Broadcast()
	owner := c.owner
	c.mu.Unlock()
	if owner != nil {
		owner.remove(c)
	}
	return c.UnixConn.Close()
}

// ConnState is a paused connection as handed over: its socket, by
// descriptor number in the successor, and what the successor's server is
// to be given before the socket's bytes (parked requests, a partial header).
type ConnState struct {
	FD    int    `json:"fd"`
	Carry []byte `json:"carry,omitempty"`
}

// Export hands over a paused connection: the socket's descriptor (kept
// open across execve, see FDs) and its carry. Nil when the client has
// closed it meanwhile (nothing to hand over).
func (c *Conn) Export(fds *FDs) (*ConnState, error) {
	// No answer is half written while the carry is taken, and none goes out
	// after it (see wmu). An answer that began after the pause (an exit
	// reaped just before the reaper paused) may be stuck in a write to a
	// client that does not read: give up rather than wait for it with the
	// daemon paused; the upgrade is then undone.
	if !lockWithin(&c.wmu, exportWriteWait) {
		return nil, fmt.Errorf("handover: an answer is still being written to the client after %v", exportWriteWait)
	}
	defer c.wmu.Unlock()
	c.mu.Lock()
	idle, _ := c.idleLocked()
	ok := c.paused && (c.parked || c.closed) && idle
	closed := c.closed
	var ids []uint32
	for id := range c.reqs {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] }) // the server wants them increasing
	var carry []byte
	for _, id := range ids {
		carry = append(carry, c.reqs[id].frame...)
	}
	c.mu.Unlock()
	if !ok {
		return nil, errors.New("handover: connection exported without a completed pause")
	}
	if closed {
		return nil, nil
	}
	c.exported.Store(true)
	carry = append(carry, c.prefix...)
	carry = append(carry, c.hdr[:c.hdrN]...)
	f, err := c.UnixConn.File()
	if err != nil {
		return nil, fmt.Errorf("handover: connection socket: %w", err)
	}
	fd, err := fds.Keep(f)
	if err != nil {
		return nil, err
	}
	return &ConnState{FD: fd, Carry: carry}, nil
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
	return NewConn(uc, st.Carry), nil
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// exportWriteWait bounds how long Export waits for a write in progress.
const exportWriteWait = time.Second

// lockWithin takes mu, trying for at most d.
func lockWithin(mu *sync.Mutex, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for !mu.TryLock() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(time.Millisecond)
	}
	return true
}
