package ttrpcserver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"syscall"
	"time"

	"github.com/containerd/ttrpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/example/containerd-shim-example-v2/internal/ttrpcframe"
	"github.com/example/containerd-shim-example-v2/proto/codec"
)

// conn is one client connection.
//
// One goroutine at a time reads it: its own for its whole life (serve), or,
// when the server's watcher holds it (watched), one per burst of input
// (readBurst), started when the socket is readable. The reader holds rmu,
// which hands the read state (hdr, lastID) from one burst's goroutine to the
// next. It answers malformed messages itself and starts a goroutine per
// call. Answers from any goroutine go out whole, one write(2) each, under
// wmu. pmu guards pending.
type conn struct {
	srv    *Server
	nc     net.Conn
	ctx    context.Context // the calls' parent, cancelled when the connection ends
	cancel context.CancelFunc

	// set before the connection is tracked, then read-only
	watched bool
	raw     syscall.RawConn // nc's descriptor, when watched
	token   uint64          // its key in the watcher, when watched

	rmu    sync.Mutex
	hdr    [ttrpcframe.HeaderLen]byte
	lastID uint32 // the last request's stream id: ids must grow
	armed  bool   // the socket is in the watcher's set

	// regMu orders the socket's armings in the watcher with its removal.
	regMu   sync.Mutex
	closing bool // under regMu: removed from the watcher, never to be armed again

	wmu       sync.Mutex
	closeOnce sync.Once
	endOnce   sync.Once

	pmu     sync.Mutex
	pending map[uint32]*pendingCall // calls answered Later; nil once the connection ended
}

func newConn(ctx context.Context, s *Server, nc net.Conn) *conn {
	c := &conn{srv: s, nc: nc, pending: make(map[uint32]*pendingCall)}
	c.ctx, c.cancel = context.WithCancel(ctx)
	if s.watch != nil {
		c.raw, c.watched = rawConn(nc)
		if c.watched {
			c.token = s.watch.newToken()
		}
	}
	return c
}

// What a watched connection may offer (handover.Conn does): bytes it holds
// that the socket no longer has, which must be read without waiting for
// the socket; and being told that its reader stopped at a message boundary.
type (
	buffered interface{ Buffered() int }
	rester   interface{ Rest() }
)

// start serves the connection: in the server's watcher when it can (see
// watcher), else with a goroutine of its own. Called once, after the
// server has tracked it.
func (c *conn) start() {
	switch {
	case !c.watched:
		go c.serve()
	case c.holdsBytes():
		// Handed-over bytes, which the socket will not report; a
		// goroutine reads them, since a partial header waits for the rest.
		go c.readBurst()
	default:
		c.rmu.Lock()
		c.rest()
	}
}

// serve reads messages until the connection fails or is closed, then
// ends it.
func (c *conn) serve() {
	defer c.end()
	c.rmu.Lock()
	defer c.rmu.Unlock()
	for c.readOne() {
	}
}

// readBurst reads a watched connection's next message, and the ones after
// it that the connection holds itself (Buffered), then leaves it to the
// watcher again.
func (c *conn) readBurst() {
	c.rmu.Lock()
	for {
		if !c.readOne() {
			c.rmu.Unlock()
			c.end()
			return
		}
		if !c.holdsBytes() {
			break
		}
	}
	c.rest()
}

// holdsBytes reports whether the connection holds bytes of the next
// messages that its socket no longer has (Buffered). The reader's to ask.
func (c *conn) holdsBytes() bool {
	b, ok := c.nc.(buffered)
	return ok && b.Buffered() > 0
}

// rest leaves a watched connection, read up to what its socket holds, to
// the watcher until its next input. The caller holds rmu; rest releases it.
func (c *conn) rest() {
	if r, ok := c.nc.(rester); ok {
		r.Rest()
	}
	first := !c.armed
	c.armed = true
	c.rmu.Unlock()
	err := c.arm(first)
	switch {
	case err == nil:
	case errors.Is(err, net.ErrClosed):
		c.end()
	case first:
		// Not a socket epoll takes: serve it the old way.
		slog.Debug("ttrpc: connection not watched; serving it with a goroutine", "error", err)
		go c.serve()
	default:
		slog.Warn("ttrpc: connection no longer watched; closing it", "error", err)
		c.end()
	}
}

// end cancels the calls still running (their answers are dropped), closes
// the connection and gives up the calls answered Later. Once.
func (c *conn) end() {
	c.endOnce.Do(func() {
		c.cancel()
		c.closeSocket()
		c.abandonPending()
		c.srv.untrack(c)
	})
}

// readOne reads one message and handles it; false once the connection
// failed or was closed. The caller holds rmu.
func (c *conn) readOne() bool {
	if _, err := io.ReadFull(c.nc, c.hdr[:]); err != nil {
		c.logReadError(err)
		return false
	}
	h := ttrpcframe.Parse(c.hdr[:])
	if h.Length > ttrpcframe.MaxPayload {
		// Skip it and say why; the connection stays usable.
		if _, err := io.CopyN(io.Discard, c.nc, int64(h.Length)); err != nil {
			c.logReadError(err)
			return false
		}
		c.sendStatus(h.StreamID, status.Newf(codes.ResourceExhausted,
			"message length %v exceeds the maximum message size of %v", h.Length, ttrpcframe.MaxPayload))
		return true
	}
	var body []byte
	if h.Length > 0 {
		body = make([]byte, h.Length)
		if _, err := io.ReadFull(c.nc, body); err != nil {
			c.logReadError(err)
			return false
		}
	}
	switch {
	case h.StreamID%2 != 1:
		c.sendStatus(h.StreamID, status.New(codes.InvalidArgument, "StreamID must be odd for client initiated streams"))
	case h.Type == ttrpcframe.TypeData && h.StreamID <= c.lastID:
		// Data on a stream a request opened (a client that opened a stream to
		// a unary method and then sends on it or closes its side): dropped.
		// The stream's one answer is the handler's; an error answer here,
		// while the call may still run, would go out first, and the client
		// would then fail the call and drop its real answer. (ttrpc's own
		// server crashes on such a frame.) On a stream whose call has
		// ended, the client has its answer and waits for nothing more.
	case h.Type == ttrpcframe.TypeData:
		c.sendStatus(h.StreamID, status.New(codes.InvalidArgument, "StreamID is no longer active"))
	case h.Type != ttrpcframe.TypeRequest:
		// Unknown message types are skipped, for compatibility with
		// later protocol versions (as ttrpc's server does).
	case h.StreamID <= c.lastID:
		c.sendStatus(h.StreamID, status.New(codes.InvalidArgument, "StreamID cannot be re-used and must increment"))
	default:
		c.lastID = h.StreamID
		c.dispatch(c.ctx, h.StreamID, body)
	}
	return true
}

// dispatch decodes a request and starts its call.
func (c *conn) dispatch(ctx context.Context, id uint32, body []byte) {
	req, err := decodeRequest(body)
	if err != nil {
		c.sendStatus(id, status.Newf(codes.InvalidArgument, "unmarshal request error: %v", err))
		return
	}
	m, err := c.srv.method(req.service, req.method)
	if err != nil {
		st, _ := status.FromError(err)
		c.sendStatus(id, st)
		return
	}
	// Both counts start here, in the reader, not in the call's goroutine: a
	// request read is counted before the reader reads on (or a pause sees
	// its connection at rest), however late that goroutine gets to run.
	c.srv.callStarted()
	c.srv.handlerStarted()
	go c.call(ctx, id, req, m)
}

// call runs one unary call and sends its answer; dispatch counted it
// (callStarted, handlerStarted). Its context is the
// connection's (ended when the connection closes), with the request's
// metadata and, when the client set one, its deadline.
func (c *conn) call(ctx context.Context, id uint32, req request, m registered) {
	defer c.srv.callDone()
	if req.metadata != nil {
		ctx = ttrpc.WithMetadata(ctx, req.metadata)
	}
	cancel := context.CancelFunc(func() {})
	if req.timeout != 0 {
		// As ttrpc's server: only 0 means none. A negative timeout is a
		// deadline that passed while the client built the request.
		ctx, cancel = context.WithTimeout(ctx, time.Duration(req.timeout))
	}
	if hook := c.srv.opts.OnRequest; hook != nil {
		hook(m.fullName)
	}
	payload := req.payload
	resp, err := m.method(ctx, func(v any) error {
		// A handler passes a new message; anything else is refused by the
		// codec itself.
		return codec.Unmarshal(payload, v)
	})
	c.srv.handlerDone()
	if later, ok := resp.(*Deferred); ok && err == nil {
		c.startLater(ctx, id, m.fullName, later, cancel)
		return
	}
	c.answer(id, m.fullName, resp, err)
	cancel()
}

// startLater starts a call answered Later and tracks it until its answer, so
// that a connection that closes first (or a deadline that passes) abandons
// it.
func (c *conn) startLater(ctx context.Context, id uint32, method string, later *Deferred, cancel context.CancelFunc) {
	p := &pendingCall{}
	p.abandon = later.start(func(resp any, err error) {
		// Counted before it is claimed: a Shutdown that finds no call
		// running between the two closes the connection under the answer.
		c.srv.callStarted()
		if !p.finish() {
			c.srv.callDone()
			return // answered or abandoned already
		}
		c.forget(id)
		c.answer(id, method, resp, err)
		c.srv.callDone()
		cancel()
	})
	if !c.remember(id, p) {
		p.giveUp() // the connection closed meanwhile
		cancel()
		return
	}
	if _, has := ctx.Deadline(); has {
		context.AfterFunc(ctx, func() {
			if p.giveUp() {
				c.forget(id)
				c.answer(id, method, nil, ctx.Err())
			}
		})
	}
}

// remember registers a call answered Later; false once the connection is
// closed. A call answered during its start is not registered.
func (c *conn) remember(id uint32, p *pendingCall) bool {
	c.pmu.Lock()
	defer c.pmu.Unlock()
	if c.pending == nil {
		return false
	}
	if !p.done.Load() {
		c.pending[id] = p
	}
	return true
}

func (c *conn) forget(id uint32) {
	c.pmu.Lock()
	if c.pending != nil {
		delete(c.pending, id)
	}
	c.pmu.Unlock()
}

// abandonPending gives up every call still waiting for its answer; called
// once, when the connection ends.
func (c *conn) abandonPending() {
	c.pmu.Lock()
	pending := c.pending
	c.pending = nil
	c.pmu.Unlock()
	for _, p := range pending {
		p.giveUp()
	}
}

// answer encodes a handler's result and sends it.
func (c *conn) answer(id uint32, method string, resp any, err error) {
	var frame []byte
	if err == nil {
		if codec.Valid(resp) { // not nil, nor a typed nil
			frame, err = encodeResponse(id, nil, resp)
		} else {
			err = fmt.Errorf("ttrpcserver: %s answered %T, not a protobuf message", method, resp)
		}
	}
	if err != nil {
		frame, err = encodeResponse(id, statusOf(err), nil)
		if err != nil {
			// Unanswered, the call would wait for its deadline, or forever
			// (Wait has none): end the connection instead, as ttrpc's server does.
			slog.Error("ttrpc: encode an error answer; closing the connection", "method", method, "error", err)
			c.close()
			return
		}
	}
	c.send(frame)
}

// sendStatus answers a message that never reached a handler.
func (c *conn) sendStatus(id uint32, st *status.Status) { c.answer(id, "", nil, st.Err()) }

// send writes one whole frame. A failed write breaks the connection: the
// peer would otherwise see a partial frame followed by another.
func (c *conn) send(frame []byte) {
	c.wmu.Lock()
	_, err := c.nc.Write(frame)
	c.wmu.Unlock()
	if err != nil {
		if !errors.Is(err, net.ErrClosed) {
			slog.Debug("ttrpc: answer not sent; closing the connection", "error", err)
		}
		c.close()
	}
}

// close closes the connection. A watched one may have no reader to see
// that and end it: end it here, from a goroutine of its own, since close is
// called from answers, which may run under their callers' locks (end gives
// up the calls answered Later, which takes those locks).
func (c *conn) close() {
	c.closeSocket()
	if c.watched {
		go c.end()
	}
}

// arm re-arms the socket in the watcher (first: adds it), unless the
// socket is being closed: an arming after closeSocket's removal would fail
// as if the watcher were broken, or, for a first one, add a registration
// nobody removes.
func (c *conn) arm(first bool) error {
	c.regMu.Lock()
	defer c.regMu.Unlock()
	if c.closing {
		return net.ErrClosed
	}
	return c.srv.watch.arm(c, first)
}

// closeSocket takes a watched socket out of the watcher, then closes it.
func (c *conn) closeSocket() {
	c.closeOnce.Do(func() {
		if c.watched {
			c.regMu.Lock()
			c.closing = true
			c.srv.watch.remove(c)
			c.regMu.Unlock()
		}
		_ = c.nc.Close()
	})
}

// logReadError reports a read that ended the connection, unless it is the
// ordinary end: the client hung up or the server closed it.
func (c *conn) logReadError(err error) {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed) || isReset(err) {
		return
	}
	slog.Warn("ttrpc: connection read failed", "error", err)
}

// statusOf is the wire status of a handler's error: a gRPC status as is
// (errgrpc made it from an errdefs class), else a code guessed from the
// error, as ttrpc's server does.
func statusOf(err error) *status.Status {
	if st, ok := status.FromError(err); ok {
		return st
	}
	return status.New(codeOf(err), err.Error())
}

func unimplemented(format string, args ...any) error {
	return status.Errorf(codes.Unimplemented, format, args...)
}
