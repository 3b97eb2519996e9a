package ttrpcserver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/containerd/ttrpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/example/containerd-shim-example-v2/internal/ttrpcframe"
	"github.com/example/containerd-shim-example-v2/proto/codec"
)

// conn is one client connection.
//
// Its goroutine (serve) owns the read side and hdr: it reads one message at
// a time, answers malformed ones itself and starts a goroutine per call.
// Answers from any goroutine go out whole, one write(2) each, under wmu.
// pmu guards pending.
type conn struct {
	srv *Server
	nc  net.Conn
	hdr [ttrpcframe.HeaderLen]byte

	wmu       sync.Mutex
	closeOnce sync.Once

	pmu     sync.Mutex
	pending map[uint32]*pendingCall // calls answered Later; nil once the connection ended
}

func newConn(s *Server, nc net.Conn) *conn {
	return &conn{srv: s, nc: nc, pending: make(map[uint32]*pendingCall)}
}

// serve reads messages until the connection fails or is closed, then
// cancels the calls still running (their answers are dropped).
func (c *conn) serve(ctx context.Context) {
	ctx, cancel := context.WithCancel(ctx)
	defer func() {
		cancel()
		c.close()
		c.abandonPending()
		c.srv.untrack(c)
	}()
	var lastID uint32
	for {
		if _, err := io.ReadFull(c.nc, c.hdr[:]); err != nil {
			c.logReadError(err)
			return
		}
		h := ttrpcframe.Parse(c.hdr[:])
		if h.Length > ttrpcframe.MaxPayload {
			// Skip it and say why; the connection stays usable.
			if _, err := io.CopyN(io.Discard, c.nc, int64(h.Length)); err != nil {
				c.logReadError(err)
				return
			}
			c.sendStatus(h.StreamID, status.Newf(codes.ResourceExhausted,
				"message length %v exceeds the maximum message size of %v", h.Length, ttrpcframe.MaxPayload))
			continue
		}
		var body []byte
		if h.Length > 0 {
			body = make([]byte, h.Length)
			if _, err := io.ReadFull(c.nc, body); err != nil {
				c.logReadError(err)
				return
			}
		}
		switch {
		case h.StreamID%2 != 1:
			c.sendStatus(h.StreamID, status.New(codes.InvalidArgument, "StreamID must be odd for client initiated streams"))
		case h.Type == ttrpcframe.TypeData:
			c.sendStatus(h.StreamID, status.New(codes.InvalidArgument, "StreamID is no longer active"))
		case h.Type != ttrpcframe.TypeRequest:
			// Unknown message types are skipped, for compatibility with
			// later protocol versions (as ttrpc's server does).
		case h.StreamID <= lastID:
			c.sendStatus(h.StreamID, status.New(codes.InvalidArgument, "StreamID cannot be re-used and must increment"))
		default:
			lastID = h.StreamID
			c.dispatch(ctx, h.StreamID, body)
		}
	}
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
	go c.call(ctx, id, req, m)
}

// call runs one unary call and sends its answer. Its context is the
// connection's (ended when the connection closes), with the request's
// metadata and, when the client set one, its deadline.
func (c *conn) call(ctx context.Context, id uint32, req request, m registered) {
	if req.metadata != nil {
		ctx = ttrpc.WithMetadata(ctx, req.metadata)
	}
	cancel := context.CancelFunc(func() {})
	if req.timeout > 0 {
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
		if !p.finish() {
			return // answered or abandoned already
		}
		c.forget(id)
		c.answer(id, method, resp, err)
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

func (c *conn) close() {
	c.closeOnce.Do(func() { _ = c.nc.Close() })
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
