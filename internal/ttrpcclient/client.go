// Package ttrpcclient makes ttrpc calls one at a time on one connection,
// with messages encoded by proto/codec: the shim's events forwarder and its
// operator commands (`introspect`, `upgrade`) use it.
//
// Why not ttrpc's client: it encodes with protobuf-go, which needs
// protobuf-go's message types (the shim links plain structs, proto/api and
// proto/*/v1) and builds their coding tables on first use; and it keeps a
// receiving goroutine per connection. A caller here sends one request and
// reads until its answer, so a call is one write and a read.
package ttrpcclient

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"time"

	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/example/containerd-shim-example-v2/internal/ttrpcframe"
	"github.com/example/containerd-shim-example-v2/proto/codec"
)

// maxStreamID is the last stream id a connection may use: ids are odd and
// must not wrap around (ttrpc's server refuses an id it has seen).
const maxStreamID = 1<<31 - 1

// Conn is a client connection. It is not safe for concurrent calls: its
// owner makes one call at a time.
type Conn struct {
	conn   net.Conn
	nextID uint32 // the stream id of the next call: odd, as ttrpc's clients number them
	// awaited is the last call whose answer is still due (ErrAnswerPending),
	// for Await; zero when none is.
	awaited struct {
		id              uint32
		service, method string
	}
	// part is the frame a deadline cut in the middle of reading: the
	// server is writing it, so the stream stays in step as long as the next
	// read goes on from here rather than from a frame's beginning.
	part partialFrame
}

// partialFrame is the part of one incoming frame read so far.
type partialFrame struct {
	hdr  [ttrpcframe.HeaderLen]byte
	nhdr int    // bytes of hdr read
	body []byte // allocated once the header is whole; nil before
	nbod int    // bytes of body read
}

// ErrAnswerPending is a call's deadline passing after its request was sent
// whole and before its answer was read whole: the server has the request
// and may still carry it out and answer, and the connection is intact (a
// frame the deadline cut is read on from where it stopped).
// Await reads that answer; sending the request again would have it carried
// out twice.
var ErrAnswerPending = errors.New("the answer has not come yet")

// New returns a client on an established connection.
func New(conn net.Conn) *Conn { return NewAt(conn, 1) }

// NewAt is New with the first stream id given (odd): for tests that need a
// connection near the end of its stream ids.
func NewAt(conn net.Conn, firstID uint32) *Conn { return &Conn{conn: conn, nextID: firstID} }

// Dial connects to a ttrpc server's unix socket.
func Dial(ctx context.Context, socket string) (*Conn, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", socket)
	if err != nil {
		return nil, err
	}
	return New(conn), nil
}

// Exhausted reports a connection whose stream ids are used up: dial anew.
func (c *Conn) Exhausted() bool { return c.nextID > maxStreamID }

// Close closes the connection.
func (c *Conn) Close() error { return c.conn.Close() }

// Call sends req to service's method and decodes the answer into resp (nil:
// the answer's payload is not wanted), waiting at most until ctx's deadline
// (only the deadline: give ctx one; a cancellation alone does not end it),
// which the request also carries as ttrpc's client sends it. An error status
// from the server comes back as a gRPC status error. A deadline that passed
// before the whole answer came is ErrAnswerPending: the connection is
// intact, and Await may read the answer later. Anything else is a transport
// failure, after which the connection should be closed.
func (c *Conn) Call(ctx context.Context, service, method string, req, resp any) error {
	if c.Exhausted() {
		return fmt.Errorf("ttrpc call %s/%s: stream ids used up on this connection", service, method)
	}
	id := c.nextID
	c.nextID += 2
	var timeout int64
	deadline, hasDeadline := ctx.Deadline()
	if hasDeadline {
		timeout = time.Until(deadline).Nanoseconds()
		if timeout <= 0 {
			return context.DeadlineExceeded
		}
	}
	frame, err := encodeRequest(id, service, method, req, timeout)
	if err != nil {
		return err
	}
	c.setDeadline(ctx)
	c.awaited.id = 0 // a new call gives up waiting for an older answer
	if _, err := c.conn.Write(frame); err != nil {
		return fmt.Errorf("send %s/%s: %w", service, method, err)
	}
	c.awaited.id, c.awaited.service, c.awaited.method = id, service, method
	return c.readAnswer(resp)
}

// Await waits, until ctx's deadline, for the answer of the last call, which
// ended with ErrAnswerPending, and decodes it into resp as Call does.
// Errors are Call's, ErrAnswerPending again among them.
func (c *Conn) Await(ctx context.Context, resp any) error {
	if c.awaited.id == 0 {
		return errors.New("ttrpc: no call is waiting for its answer")
	}
	if deadline, ok := ctx.Deadline(); ok && !time.Now().Before(deadline) {
		return fmt.Errorf("answer to %s/%s: %w", c.awaited.service, c.awaited.method, ErrAnswerPending)
	}
	c.setDeadline(ctx)
	return c.readAnswer(resp)
}

func (c *Conn) setDeadline(ctx context.Context) {
	deadline, _ := ctx.Deadline() // the zero time when there is none: no deadline
	_ = c.conn.SetDeadline(deadline)
}

// readAnswer reads frames until the answer to the awaited call, skipping
// any other (a late answer to a call given up on).
func (c *Conn) readAnswer(resp any) error {
	service, method := c.awaited.service, c.awaited.method
	for {
		h, body, err := c.readFrame()
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				// What was read of a frame is kept: the answer may
				// still come whole, and the stream stays in step.
				return fmt.Errorf("answer to %s/%s: %w (%w)", service, method, ErrAnswerPending, err)
			}
			c.awaited.id = 0
			c.part = partialFrame{}
			return fmt.Errorf("read the answer to %s/%s: %w", service, method, err)
		}
		if h.StreamID != c.awaited.id || h.Type != ttrpcframe.TypeResponse {
			continue // not the awaited answer (a late one to a call given up on)
		}
		c.awaited.id = 0
		return decodeResponse(body, resp)
	}
}

// readFrame reads one whole frame, going on from c.part, which keeps what
// a failed read left of it.
func (c *Conn) readFrame() (ttrpcframe.Header, []byte, error) {
	p := &c.part
	for p.nhdr < len(p.hdr) {
		n, err := c.conn.Read(p.hdr[p.nhdr:])
		p.nhdr += n
		if err != nil && p.nhdr < len(p.hdr) {
			if errors.Is(err, io.EOF) && p.nhdr > 0 {
				err = io.ErrUnexpectedEOF
			}
			return ttrpcframe.Header{}, nil, err
		}
	}
	h := ttrpcframe.Parse(p.hdr[:])
	if h.Length > ttrpcframe.MaxPayload {
		return h, nil, fmt.Errorf("frame of %d bytes exceeds %d", h.Length, ttrpcframe.MaxPayload)
	}
	if p.body == nil {
		p.body = make([]byte, h.Length)
	}
	for p.nbod < len(p.body) {
		n, err := c.conn.Read(p.body[p.nbod:])
		p.nbod += n
		if err != nil && p.nbod < len(p.body) {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return h, nil, err
		}
	}
	body := p.body
	*p = partialFrame{}
	return h, body, nil
}

// encodeRequest builds a request frame, header included, in one buffer.
func encodeRequest(id uint32, service, method string, req any, timeout int64) ([]byte, error) {
	payload := codec.Size(req)
	size := protowire.SizeTag(ttrpcframe.ReqService) + protowire.SizeBytes(len(service)) +
		protowire.SizeTag(ttrpcframe.ReqMethod) + protowire.SizeBytes(len(method)) +
		protowire.SizeTag(ttrpcframe.ReqPayload) + protowire.SizeBytes(payload)
	if timeout > 0 {
		size += protowire.SizeTag(ttrpcframe.ReqTimeoutNano) + protowire.SizeVarint(uint64(timeout))
	}
	if size > ttrpcframe.MaxPayload {
		// An answer of sorts, not a transport failure: a caller that
		// retries transport failures must not retry this one forever.
		return nil, status.Errorf(codes.ResourceExhausted, "request of %d bytes exceeds ttrpc's maximum message size of %d", size, ttrpcframe.MaxPayload)
	}
	b := make([]byte, ttrpcframe.HeaderLen, ttrpcframe.HeaderLen+size)
	ttrpcframe.Put(b, ttrpcframe.Header{Length: uint32(size), StreamID: id, Type: ttrpcframe.TypeRequest})
	b = protowire.AppendTag(b, ttrpcframe.ReqService, protowire.BytesType)
	b = protowire.AppendString(b, service)
	b = protowire.AppendTag(b, ttrpcframe.ReqMethod, protowire.BytesType)
	b = protowire.AppendString(b, method)
	b = protowire.AppendTag(b, ttrpcframe.ReqPayload, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(payload))
	b, err := codec.Append(b, req)
	if err != nil {
		return nil, fmt.Errorf("encode %s/%s: %w", service, method, err)
	}
	if timeout > 0 {
		b = protowire.AppendTag(b, ttrpcframe.ReqTimeoutNano, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(timeout))
	}
	if len(b) != ttrpcframe.HeaderLen+size {
		return nil, fmt.Errorf("encode %s/%s: %d bytes, measured %d", service, method, len(b)-ttrpcframe.HeaderLen, size)
	}
	return b, nil
}

// decodeResponse reads a ttrpc.Response: its payload into resp for an OK
// status, the status as an error otherwise. Decoded as protobuf-go decodes
// it: the status (a message) sent in parts is their merge, the payload
// (bytes) sent twice is the last one.
func decodeResponse(b []byte, resp any) error {
	var s spb.Status
	var payload []byte
	for len(b) > 0 {
		num, typ, n, err := codec.ConsumeTag(b)
		if err != nil {
			return fmt.Errorf("decode the answer: %w", err)
		}
		b = b[n:]
		switch {
		case num == ttrpcframe.RespStatus && typ == protowire.BytesType:
			var st []byte
			if st, n = protowire.ConsumeBytes(b); n >= 0 {
				if err := codec.Unmarshal(st, &s); err != nil {
					return fmt.Errorf("decode the answer's status: %w", err)
				}
			}
		case num == ttrpcframe.RespPayload && typ == protowire.BytesType:
			payload, n = protowire.ConsumeBytes(b)
		default:
			n = protowire.ConsumeFieldValue(num, typ, b)
		}
		if n < 0 {
			return fmt.Errorf("decode the answer: %w", protowire.ParseError(n))
		}
		b = b[n:]
	}
	if s.Code != int32(codes.OK) {
		if len(s.Details) > 0 {
			return status.ErrorProto(&s)
		}
		return status.Error(codes.Code(s.Code), s.Message) // ErrorProto would clone s through protobuf-go's tables
	}
	if resp != nil {
		if err := codec.Unmarshal(payload, resp); err != nil {
			return fmt.Errorf("decode the answer: %w", err)
		}
	}
	return nil
}
