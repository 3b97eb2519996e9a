package ttrpcserver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"syscall"
	"unicode/utf8"

	"github.com/containerd/ttrpc"
	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/example/containerd-shim-example-v2/internal/ttrpcframe"
	"github.com/example/containerd-shim-example-v2/proto/codec"
)

// request is a decoded ttrpc.Request. Names and payload alias the message
// body: a request is decoded without copying its payload.
type request struct {
	service, method []byte
	payload         []byte
	timeout         int64 // nanoseconds; 0: none
	metadata        ttrpc.MD
}

// decodeRequest reads a ttrpc.Request. Unknown fields are skipped, as any
// protobuf decoder does; a repeated scalar field keeps its last value.
func decodeRequest(b []byte) (request, error) {
	var r request
	err := eachField(b, func(num protowire.Number, typ protowire.Type, b []byte) (n int, err error) {
		switch {
		case num == ttrpcframe.ReqService && typ == protowire.BytesType:
			r.service, n = protowire.ConsumeBytes(b)
		case num == ttrpcframe.ReqMethod && typ == protowire.BytesType:
			r.method, n = protowire.ConsumeBytes(b)
		case num == ttrpcframe.ReqPayload && typ == protowire.BytesType:
			r.payload, n = protowire.ConsumeBytes(b)
		case num == ttrpcframe.ReqTimeoutNano && typ == protowire.VarintType:
			var v uint64
			v, n = protowire.ConsumeVarint(b)
			r.timeout = int64(v)
		case num == ttrpcframe.ReqMetadata && typ == protowire.BytesType:
			var kv []byte
			if kv, n = protowire.ConsumeBytes(b); n >= 0 {
				err = r.addMetadata(kv)
			}
		default:
			n = protowire.ConsumeFieldValue(num, typ, b)
		}
		return n, err
	})
	if err != nil {
		return request{}, err
	}
	return r, nil
}

// addMetadata decodes one KeyValue and appends it, as ttrpc's server builds
// its MD (containerd sends its namespace this way), but with the key
// lower-cased (MD.Append), the form MD.Get looks keys up by: a key a client
// sent in capitals is found here, where ttrpc's server keeps it as sent and
// Get misses it. A key or value that is not UTF-8 fails the request, as
// there.
func (r *request) addMetadata(b []byte) error {
	var key, value []byte
	err := eachField(b, func(num protowire.Number, typ protowire.Type, b []byte) (n int, err error) {
		switch {
		case num == ttrpcframe.KVKey && typ == protowire.BytesType:
			key, n = protowire.ConsumeBytes(b)
		case num == ttrpcframe.KVValue && typ == protowire.BytesType:
			value, n = protowire.ConsumeBytes(b)
		default:
			n = protowire.ConsumeFieldValue(num, typ, b)
		}
		return n, nil
	})
	if err != nil {
		return err
	}
	if !utf8.Valid(key) || !utf8.Valid(value) {
		return errors.New("metadata: string field contains invalid UTF-8")
	}
	if r.metadata == nil {
		r.metadata = ttrpc.MD{}
	}
	r.metadata.Append(string(key), string(value))
	return nil
}

// eachField walks a message's fields: field consumes one field's value from
// the bytes after its tag and returns how many it took (negative: a
// protowire parse error).
func eachField(b []byte, field func(protowire.Number, protowire.Type, []byte) (int, error)) error {
	for len(b) > 0 {
		num, typ, n, err := codec.ConsumeTag(b)
		if err != nil {
			return err
		}
		b = b[n:]
		if n, err = field(num, typ, b); err != nil {
			return err
		}
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
	}
	return nil
}

// encodeResponse builds a whole response frame, header included, in one
// buffer of its exact size: a ttrpc.Response whose status is st (nil: OK)
// and whose payload is msg encoded in place (nil: none). An answer too large
// for the protocol becomes a ResourceExhausted status, so the client gets an
// error instead of a frame it would refuse.
func encodeResponse(id uint32, st *status.Status, msg any) ([]byte, error) {
	var stBytes []byte
	if st != nil && st.Code() != codes.OK {
		var err error
		if stBytes, err = codec.Marshal(statusProto(st)); err != nil {
			return nil, fmt.Errorf("encode status: %w", err)
		}
	}
	msgLen := 0
	if msg != nil {
		msgLen = codec.Size(msg)
	}
	// An OK answer has no status field: ttrpc's server sets the field from
	// status.FromError(nil), which is nil.
	size := 0
	if stBytes != nil {
		size += protowire.SizeTag(ttrpcframe.RespStatus) + protowire.SizeBytes(len(stBytes))
	}
	if msgLen > 0 {
		size += protowire.SizeTag(ttrpcframe.RespPayload) + protowire.SizeBytes(msgLen)
	}
	if size > ttrpcframe.MaxPayload {
		return encodeResponse(id, status.Newf(codes.ResourceExhausted,
			"answer of %d bytes exceeds the maximum message size of %d", size, ttrpcframe.MaxPayload), nil)
	}
	frame := make([]byte, ttrpcframe.HeaderLen, ttrpcframe.HeaderLen+size)
	ttrpcframe.Put(frame, ttrpcframe.Header{Length: uint32(size), StreamID: id, Type: ttrpcframe.TypeResponse})
	if stBytes != nil {
		frame = protowire.AppendTag(frame, ttrpcframe.RespStatus, protowire.BytesType)
		frame = protowire.AppendBytes(frame, stBytes)
	}
	if msgLen > 0 {
		frame = protowire.AppendTag(frame, ttrpcframe.RespPayload, protowire.BytesType)
		frame = protowire.AppendVarint(frame, uint64(msgLen))
		var err error
		if frame, err = codec.Append(frame, msg); err != nil {
			return nil, fmt.Errorf("encode answer: %w", err)
		}
		if len(frame) != ttrpcframe.HeaderLen+size {
			return nil, fmt.Errorf("encode answer: %d bytes, measured %d", len(frame)-ttrpcframe.HeaderLen, size)
		}
	}
	return frame, nil
}

// statusProto is st as its wire message, its text made valid UTF-8: proto3
// refuses to encode a string that is not, and an error's text can carry
// bytes from a path or a runtime's output; without an encodable status the
// caller would get no answer at all. Status.Proto copies the message with
// proto.Clone, which builds protobuf-go's tables for Status and Any (see
// proto/codec); a status without details, which is every status the shim's
// handlers return, is built from its code and message instead.
func statusProto(st *status.Status) *spb.Status {
	msg := strings.ToValidUTF8(st.Message(), "\uFFFD")
	if len(st.Details()) > 0 {
		p := st.Proto()
		p.Message = msg
		return p
	}
	return &spb.Status{Code: int32(st.Code()), Message: msg}
}

// codeOf guesses a status code for an error that carries none, from the
// same kinds of error as ttrpc's server. It looks through wrapping
// (errors.Is), where ttrpc's server compares the error itself: a wrapped
// os.ErrNotExist is NotFound here and Unknown there. The shim's own
// handlers give every error its code (errdefs classes) before it gets here.
func codeOf(err error) codes.Code {
	switch {
	case errors.Is(err, io.EOF):
		return codes.OutOfRange
	case errors.Is(err, io.ErrClosedPipe), errors.Is(err, io.ErrNoProgress), errors.Is(err, io.ErrShortBuffer),
		errors.Is(err, io.ErrShortWrite), errors.Is(err, io.ErrUnexpectedEOF):
		return codes.FailedPrecondition
	case errors.Is(err, os.ErrInvalid):
		return codes.InvalidArgument
	case errors.Is(err, context.Canceled):
		return codes.Canceled
	case errors.Is(err, context.DeadlineExceeded):
		return codes.DeadlineExceeded
	case errors.Is(err, os.ErrExist):
		return codes.AlreadyExists
	case errors.Is(err, os.ErrNotExist):
		return codes.NotFound
	case errors.Is(err, os.ErrPermission):
		return codes.PermissionDenied
	}
	return codes.Unknown
}

func isReset(err error) bool {
	return errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}
