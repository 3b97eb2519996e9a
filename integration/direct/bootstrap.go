package direct

import (
	"errors"
	"fmt"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// BootstrapParams is what containerd 2.3+ writes on the stdin of `start`
// (containerd.runtime.bootstrap.v1.BootstrapParams, PROTOCOL.md §1.10). The
// containerd API module this test module uses predates the message, so it is
// encoded here from its field numbers: that also means the shim's decoder is
// checked against an encoder that is not its own generated code.
type BootstrapParams struct {
	InstanceID        string       // 1
	Namespace         string       // 2
	LogLevel          int32        // 3, an enum: INFO 0, DEBUG -4, TRACE -8, WARN 4, ERROR 8
	ContainerdVersion string       // 4
	TTRPCAddress      string       // 5
	GRPCAddress       string       // 6
	ContainerdBinary  string       // 7
	Extensions        []*anypb.Any // 8, each wrapped as { Any value = 1 }
	SocketDir         string       // 9
}

// Log levels of BootstrapParams.LogLevel.
const (
	LogLevelInfo  int32 = 0
	LogLevelDebug int32 = -4
)

// Marshal returns the protobuf wire bytes.
func (p BootstrapParams) Marshal() ([]byte, error) {
	var b []byte
	str := func(n protowire.Number, s string) {
		if s != "" {
			b = protowire.AppendTag(b, n, protowire.BytesType)
			b = protowire.AppendString(b, s)
		}
	}
	str(1, p.InstanceID)
	str(2, p.Namespace)
	if p.LogLevel != 0 {
		// A negative enum is sign-extended to 64 bits: a 10-byte varint.
		b = protowire.AppendTag(b, 3, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(int64(p.LogLevel)))
	}
	str(4, p.ContainerdVersion)
	str(5, p.TTRPCAddress)
	str(6, p.GRPCAddress)
	str(7, p.ContainerdBinary)
	for _, ext := range p.Extensions {
		v, err := proto.Marshal(ext)
		if err != nil {
			return nil, fmt.Errorf("encode bootstrap extension: %w", err)
		}
		var e []byte
		e = protowire.AppendTag(e, 1, protowire.BytesType)
		e = protowire.AppendBytes(e, v)
		b = protowire.AppendTag(b, 8, protowire.BytesType)
		b = protowire.AppendBytes(b, e)
	}
	str(9, p.SocketDir)
	return b, nil
}

// BootstrapResult is the protobuf answer of `start` to a 2.3+ bootstrap
// (containerd.runtime.bootstrap.v1.BootstrapResult): version = 1,
// address = 2, protocol = 3; capabilities (4) and metadata (5) are counted,
// not interpreted.
type BootstrapResult struct {
	Version      int32
	Address      string
	Protocol     string
	OtherFields  int
	UnknownField []protowire.Number
}

// DecodeBootstrapResult reads a BootstrapResult strictly: every byte must
// belong to a well-formed field, and the known fields must have their
// declared wire types. A JSON or plain-text answer fails here, as it would
// fail containerd 2.3's decoder.
func DecodeBootstrapResult(b []byte) (BootstrapResult, error) {
	var r BootstrapResult
	if len(b) == 0 {
		return r, errors.New("empty answer")
	}
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return r, fmt.Errorf("bad tag: %w", protowire.ParseError(n))
		}
		b = b[n:]
		want := map[protowire.Number]protowire.Type{1: protowire.VarintType, 2: protowire.BytesType, 3: protowire.BytesType}
		if wt, known := want[num]; known && wt != typ {
			return r, fmt.Errorf("field %d has wire type %d, want %d", num, typ, wt)
		}
		switch num {
		case 1:
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return r, fmt.Errorf("field version: %w", protowire.ParseError(n))
			}
			r.Version, b = int32(v), b[n:]
		case 2, 3:
			s, n := protowire.ConsumeString(b)
			if n < 0 {
				return r, fmt.Errorf("field %d: %w", num, protowire.ParseError(n))
			}
			if num == 2 {
				r.Address = s
			} else {
				r.Protocol = s
			}
			b = b[n:]
		default:
			n := protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return r, fmt.Errorf("field %d: %w", num, protowire.ParseError(n))
			}
			if num == 4 || num == 5 {
				r.OtherFields++
			} else {
				r.UnknownField = append(r.UnknownField, num)
			}
			b = b[n:]
		}
	}
	return r, nil
}
