// Package ttrpcframe is ttrpc's framing (its PROTOCOL.md), the one
// definition the shim's server (ttrpcserver), the upgrade's connection
// wrapper (handover) and the events forwarder's call (events) share: every
// message is a 10-byte header (payload length and stream id, big endian;
// message type; flags) and then at most 4 MiB of payload, a ttrpc.Request
// or ttrpc.Response (or stream data).
package ttrpcframe

import "encoding/binary"

const (
	// HeaderLen is the header's size.
	HeaderLen = 10
	// MaxPayload is the largest payload either side accepts.
	MaxPayload = 4 << 20

	// Message types.
	TypeRequest  = 1
	TypeResponse = 2
	TypeData     = 3
)

// Field numbers of ttrpc's messages (request.proto): Request, Response and
// the metadata's KeyValue. The shim encodes and decodes these by hand.
const (
	ReqService     = 1
	ReqMethod      = 2
	ReqPayload     = 3
	ReqTimeoutNano = 4
	ReqMetadata    = 5
	RespStatus     = 1
	RespPayload    = 2
	KVKey          = 1
	KVValue        = 2
)

// Header is a message's header; its flags byte (streams only) is not used
// by the shim.
type Header struct {
	Length   uint32
	StreamID uint32
	Type     byte
}

// Parse reads a header from the first HeaderLen bytes of b.
func Parse(b []byte) Header {
	_ = b[HeaderLen-1]
	return Header{
		Length:   binary.BigEndian.Uint32(b[0:4]),
		StreamID: binary.BigEndian.Uint32(b[4:8]),
		Type:     b[8],
	}
}

// Put writes h into the first HeaderLen bytes of b, flags zero.
func Put(b []byte, h Header) {
	_ = b[HeaderLen-1]
	binary.BigEndian.PutUint32(b[0:4], h.Length)
	binary.BigEndian.PutUint32(b[4:8], h.StreamID)
	b[8] = h.Type
	b[9] = 0
}
