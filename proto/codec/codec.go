// Package codec encodes and decodes the protobuf messages the shim exchanges
// with containerd (requests, answers, events, options) without protobuf-go's
// reflection: messages.gen.go has a size, an append and a merge function per
// message, written by ./gen from the messages' descriptors.
//
// Why: protobuf-go builds, on a message type's first use, coding tables for
// the type and the full descriptors of its whole .proto file, and keeps them
// for the process's life. A shim uses a few dozen message types; their tables
// were about 240 KB of its heap (a heap profile of an idle shim with one
// container), made while it served its first requests. Every shim pays that,
// and it paid the time to build them on its first Create.
//
// The output is byte for byte what proto.Marshal writes (fields in number
// order, map keys sorted as with Deterministic), and decoding accepts what
// proto.Unmarshal accepts and fails where it fails: TestMatchesProto and
// FuzzMerge compare the two on every covered type. A type not covered falls
// back to protobuf-go.
//
// containerd's API messages are encoded as their mirrors under proto/api
// (plain structs written by ./gen with the same names and fields), so the
// shim does not link containerd's generated packages: each registers its
// .proto files at every start-up, which cost an idle shim about 0.4 MiB.
package codec

import (
	"errors"
	"fmt"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

//go:generate go run ./gen ..

// Messages are containerd's API messages as mirrored under proto/api, this
// project's own (proto/*/v1), and the well-known types the task API uses.
// Any other proto.Message falls back to protobuf-go; a value that is neither
// is refused with an error (Size reports 0 for it).

// Size returns the encoded size of m.
func Size(m any) int {
	if n, ok := size(m); ok {
		return n
	}
	if pm, ok := m.(proto.Message); ok {
		return proto.Size(pm)
	}
	return 0
}

// Marshal encodes m.
func Marshal(m any) ([]byte, error) {
	if n, ok := size(m); ok {
		b, _, err := appendTo(make([]byte, 0, n), m)
		return b, err
	}
	if pm, ok := m.(proto.Message); ok {
		return proto.Marshal(pm)
	}
	return nil, notMessage(m)
}

// Append appends m's encoding to b.
func Append(b []byte, m any) ([]byte, error) {
	if out, ok, err := appendTo(b, m); ok {
		return out, err
	}
	if pm, ok := m.(proto.Message); ok {
		return proto.MarshalOptions{}.MarshalAppend(b, pm)
	}
	return b, notMessage(m)
}

// Unmarshal decodes b into m, which must be empty (a new message): unlike
// proto.Unmarshal it does not reset m first, so fields already set would be
// merged with.
func Unmarshal(b []byte, m any) error {
	if ok, err := merge(b, m); ok {
		return err
	}
	if pm, ok := m.(proto.Message); ok {
		return proto.Unmarshal(b, pm)
	}
	return notMessage(m)
}

// MessageName returns m's full protobuf name, as proto.MessageName does
// ("" for a value that is not a message).
func MessageName(m any) string {
	if n, ok := name(m); ok {
		return n
	}
	if pm, ok := m.(proto.Message); ok {
		return string(proto.MessageName(pm))
	}
	return ""
}

// Valid reports whether m is a message that can be encoded: of a covered
// type, or a protobuf-go message, and not a nil pointer.
func Valid(m any) bool {
	if isnil, ok := isNil(m); ok {
		return !isnil
	}
	pm, ok := m.(proto.Message)
	return ok && pm.ProtoReflect().IsValid()
}

// Covered reports whether m's type is encoded here rather than by protobuf-go.
func Covered(m any) bool {
	_, ok := size(m)
	return ok
}

func notMessage(m any) error { return fmt.Errorf("codec: %T is not a protobuf message", m) }

var errInvalidUTF8 = errors.New("string field contains invalid UTF-8")

func errUTF8(field string) error { return fmt.Errorf("%s: %w", field, errInvalidUTF8) }

var errWireFormat = errors.New("invalid wire-format data")

// consumeTag reads a field's key as protobuf-go does: a field number outside
// 1..MaxValidNumber, or an end-group key outside a group, is an error.
// ConsumeTag reads a field's tag as protobuf-go's decoder accepts it: a
// field number from 1 to 2^29-1 and no stray end of group (protowire's own
// ConsumeTag takes numbers up to 2^31-1). For the shim's hand-written
// decoders of ttrpc frames and CRI messages.
func ConsumeTag(b []byte) (protowire.Number, protowire.Type, int, error) { return consumeTag(b) }

// Fields calls fn for each field of a message's wire form, in order: v is a
// length-delimited field's bytes, n a varint's value. Unknown wire types are
// skipped, as protobuf decoders skip them. For the shim's readers of
// messages it does not mirror whole (CRI's pod config) or of fields its
// mirrors lack (one removed from containerd's API that older clients send).
func Fields(b []byte, fn func(num protowire.Number, typ protowire.Type, v []byte, n uint64) error) error {
	for len(b) > 0 {
		num, typ, l, err := consumeTag(b)
		if err != nil {
			return err
		}
		b = b[l:]
		var v []byte
		var n uint64
		switch typ {
		case protowire.BytesType:
			v, l = protowire.ConsumeBytes(b)
		case protowire.VarintType:
			n, l = protowire.ConsumeVarint(b)
		default:
			l = protowire.ConsumeFieldValue(num, typ, b)
		}
		if l < 0 {
			return protowire.ParseError(l)
		}
		b = b[l:]
		if err := fn(num, typ, v, n); err != nil {
			return err
		}
	}
	return nil
}

func consumeTag(b []byte) (protowire.Number, protowire.Type, int, error) {
	v, n := protowire.ConsumeVarint(b)
	if n < 0 {
		return 0, 0, n, protowire.ParseError(n)
	}
	num, typ := protowire.Number(v>>3), protowire.Type(v&7)
	if v>>3 < uint64(protowire.MinValidNumber) || v>>3 > uint64(protowire.MaxValidNumber) || typ == protowire.EndGroupType {
		return 0, 0, -1, errWireFormat
	}
	return num, typ, n, nil
}

// consumeFixed32 reads a fixed32 as the uint64 the generated code converts.
//
//lint:ignore U1000 used by messages.gen.go when a covered message has a 32-bit fixed field (none today)
func consumeFixed32(b []byte) (uint64, int) {
	v, n := protowire.ConsumeFixed32(b)
	return uint64(v), n
}

// mergeStringMapEntry decodes one map<string, string> entry into m; a
// missing key or value is the empty string.
func mergeStringMapEntry(b []byte, m map[string]string, field string) error {
	var key, val string
	for len(b) > 0 {
		num, typ, n, err := consumeTag(b)
		if err != nil {
			return err
		}
		b = b[n:]
		switch {
		case (num == 1 || num == 2) && typ == protowire.BytesType:
			var v []byte
			if v, n = protowire.ConsumeBytes(b); n < 0 {
				break
			}
			if !utf8.Valid(v) {
				return errUTF8(field)
			}
			if num == 1 {
				key = string(v)
			} else {
				val = string(v)
			}
		default:
			n = protowire.ConsumeFieldValue(num, typ, b)
		}
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
	}
	m[key] = val
	return nil
}
