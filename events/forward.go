package events

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	eventsapi "github.com/example/containerd-shim-example-v2/proto/api/services/ttrpc/events/v1"
	"github.com/example/containerd-shim-example-v2/proto/api/types"
	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/example/containerd-shim-example-v2/internal/ttrpcframe"
	"github.com/example/containerd-shim-example-v2/proto/codec"
)

// The client side of one ttrpc call (internal/ttrpcframe has the framing).
const (
	// ttrpc.Request's and ttrpc.Response's field numbers.
	reqService     = 1
	reqMethod      = 2
	reqPayload     = 3
	reqTimeoutNano = 4
	respStatus     = 1
	respPayload    = 2

	// maxStreamID is the last stream id a connection uses before the
	// forwarder dials a new one (ids are odd and must not wrap around).
	maxStreamID = 1<<31 - 1

	forwardService = "containerd.services.events.ttrpc.v1.Events"
	forwardMethod  = "Forward"
)

// TTRPCForwarder forwards to containerd's ttrpc events service, dialing (and
// re-dialing after a failure) on demand. Only the queue's goroutine uses it.
//
// It makes the call itself instead of through ttrpc's client: the queue
// sends one event at a time, so a call is one write and one read on the
// connection, with no goroutines, and the messages are encoded by
// proto/codec (ttrpc's client would build protobuf-go's tables for its own
// messages and for the event's in every shim).
type TTRPCForwarder struct {
	address string
	conn    net.Conn
	nextID  uint32 // the stream id of the next call: odd, as ttrpc's clients number them
}

// NewTTRPCForwarder returns a forwarder for containerd's TTRPC_ADDRESS.
func NewTTRPCForwarder(address string) *TTRPCForwarder {
	return &TTRPCForwarder{address: strings.TrimPrefix(address, "unix://")}
}

// Forward sends one envelope.
func (f *TTRPCForwarder) Forward(ctx context.Context, env *types.Envelope) error {
	if f.conn != nil && f.nextID > maxStreamID {
		// ttrpc's server refuses a stream id it has seen on the connection:
		// a new connection starts the count again.
		_ = f.Close()
	}
	if f.conn == nil {
		d := net.Dialer{Timeout: dialTimeout}
		conn, err := d.DialContext(ctx, "unix", f.address)
		if err != nil {
			return fmt.Errorf("dial containerd events at %s: %w", f.address, err)
		}
		f.conn, f.nextID = conn, 1
	}
	err := f.call(ctx, &eventsapi.ForwardRequest{Envelope: env})
	if err != nil && !IsRejection(err) {
		// The connection may be broken, or hold a late answer: start afresh
		// next time.
		_ = f.Close()
	}
	return err
}

// call sends one Forward request and waits for its answer, at most until
// ctx's deadline (which the request also carries, as ttrpc's client sends
// it). containerd's refusal comes back as a gRPC status error.
func (f *TTRPCForwarder) call(ctx context.Context, req *eventsapi.ForwardRequest) error {
	id := f.nextID
	f.nextID += 2
	var timeout int64
	deadline, hasDeadline := ctx.Deadline()
	if hasDeadline {
		timeout = time.Until(deadline).Nanoseconds()
		if timeout <= 0 {
			return context.DeadlineExceeded
		}
	}
	frame, err := encodeForward(id, req, timeout)
	if err != nil {
		return err
	}
	if hasDeadline {
		_ = f.conn.SetDeadline(deadline)
	} else {
		_ = f.conn.SetDeadline(time.Time{})
	}
	if _, err := f.conn.Write(frame); err != nil {
		return fmt.Errorf("send event: %w", err)
	}
	for {
		var hdr [ttrpcframe.HeaderLen]byte
		if _, err := io.ReadFull(f.conn, hdr[:]); err != nil {
			return fmt.Errorf("read containerd's answer: %w", err)
		}
		h := ttrpcframe.Parse(hdr[:])
		if h.Length > ttrpcframe.MaxPayload {
			return fmt.Errorf("read containerd's answer: frame of %d bytes exceeds %d", h.Length, ttrpcframe.MaxPayload)
		}
		body := make([]byte, h.Length)
		if _, err := io.ReadFull(f.conn, body); err != nil {
			return fmt.Errorf("read containerd's answer: %w", err)
		}
		if h.StreamID != id || h.Type != ttrpcframe.TypeResponse {
			continue // not this call's answer (none other is outstanding)
		}
		return decodeAnswer(body)
	}
}

// encodeForward builds the request frame, header included, in one buffer.
func encodeForward(id uint32, req *eventsapi.ForwardRequest, timeout int64) ([]byte, error) {
	payload := codec.Size(req)
	size := protowire.SizeTag(reqService) + protowire.SizeBytes(len(forwardService)) +
		protowire.SizeTag(reqMethod) + protowire.SizeBytes(len(forwardMethod)) +
		protowire.SizeTag(reqPayload) + protowire.SizeBytes(payload)
	if timeout > 0 {
		size += protowire.SizeTag(reqTimeoutNano) + protowire.SizeVarint(uint64(timeout))
	}
	if size > ttrpcframe.MaxPayload {
		// An answer, not a transport failure: the queue drops the event after
		// a few attempts instead of retrying it forever.
		return nil, status.Errorf(codes.ResourceExhausted, "event of %d bytes exceeds ttrpc's maximum message size of %d", size, ttrpcframe.MaxPayload)
	}
	b := make([]byte, ttrpcframe.HeaderLen, ttrpcframe.HeaderLen+size)
	ttrpcframe.Put(b, ttrpcframe.Header{Length: uint32(size), StreamID: id, Type: ttrpcframe.TypeRequest})
	b = protowire.AppendTag(b, reqService, protowire.BytesType)
	b = protowire.AppendString(b, forwardService)
	b = protowire.AppendTag(b, reqMethod, protowire.BytesType)
	b = protowire.AppendString(b, forwardMethod)
	b = protowire.AppendTag(b, reqPayload, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(payload))
	b, err := codec.Append(b, req)
	if err != nil {
		return nil, fmt.Errorf("encode event: %w", err)
	}
	if timeout > 0 {
		b = protowire.AppendTag(b, reqTimeoutNano, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(timeout))
	}
	if len(b) != ttrpcframe.HeaderLen+size {
		return nil, fmt.Errorf("encode event: %d bytes, measured %d", len(b)-ttrpcframe.HeaderLen, size)
	}
	return b, nil
}

// decodeAnswer reads a ttrpc.Response: nil for an OK status (Forward's
// payload is Empty), the status as an error otherwise.
func decodeAnswer(b []byte) error {
	var s spb.Status
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return fmt.Errorf("decode containerd's answer: %w", protowire.ParseError(n))
		}
		b = b[n:]
		if num == respStatus && typ == protowire.BytesType {
			var st []byte
			if st, n = protowire.ConsumeBytes(b); n >= 0 {
				// A status sent in parts is their merge, as protobuf-go decodes
				// it: codec.Unmarshal merges into s.
				if err := codec.Unmarshal(st, &s); err != nil {
					return fmt.Errorf("decode containerd's answer: %w", err)
				}
			}
		} else {
			n = protowire.ConsumeFieldValue(num, typ, b)
		}
		if n < 0 {
			return fmt.Errorf("decode containerd's answer: %w", protowire.ParseError(n))
		}
		b = b[n:]
	}
	if s.Code == int32(codes.OK) {
		return nil
	}
	if len(s.Details) > 0 {
		return status.ErrorProto(&s)
	}
	return status.Error(codes.Code(s.Code), s.Message) // ErrorProto would clone s through protobuf-go's tables
}

// IsRejection reports an answer from containerd (a gRPC status it sent), as
// opposed to a transport failure such as a refused or broken connection.
func IsRejection(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) || isNetErr(err) {
		return false
	}
	_, ok := status.FromError(err)
	return ok
}

func isNetErr(err error) bool {
	var ne net.Error
	return errors.As(err, &ne)
}

// Close closes the connection.
func (f *TTRPCForwarder) Close() error {
	if f.conn == nil {
		return nil
	}
	err := f.conn.Close()
	f.conn = nil
	return err
}
