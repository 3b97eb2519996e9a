package ttrpcframe

import (
	"bytes"
	"testing"
)

// The header's layout as ttrpc's PROTOCOL.md gives it, both ways.
func TestHeaderLayout(t *testing.T) {
	b := make([]byte, HeaderLen)
	Put(b, Header{Length: 0x01020304, StreamID: 0x0a0b0c0d, Type: TypeResponse})
	if want := []byte{1, 2, 3, 4, 0x0a, 0x0b, 0x0c, 0x0d, TypeResponse, 0}; !bytes.Equal(b, want) {
		t.Fatalf("Put wrote %x, want %x", b, want)
	}
	if h := Parse(b); h != (Header{Length: 0x01020304, StreamID: 0x0a0b0c0d, Type: TypeResponse}) {
		t.Fatalf("Parse = %+v", h)
	}
}
