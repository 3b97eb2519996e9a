package ttrpcserver

import (
	"bytes"
	"slices"
	"testing"

	"github.com/containerd/ttrpc"
	"google.golang.org/protobuf/proto"
)

// decodeRequest against protobuf's own decoder of ttrpc.Request, on any
// bytes a client might send: no panic; whatever protobuf accepts is accepted
// with the same service, method, payload, timeout and metadata; and what is
// refused, protobuf refuses too. (protobuf also refuses strings that are
// not UTF-8: in metadata so does the server; a service or method name it
// takes as bytes, which then match no registered method.)
func FuzzDecodeRequest(f *testing.F) {
	valid, _ := proto.Marshal(&ttrpc.Request{
		Service: "containerd.task.v2.Task", Method: "Create", Payload: []byte{0x0a, 0x02, 'i', 'd'}, TimeoutNano: 5e9,
		Metadata: []*ttrpc.KeyValue{{Key: "containerd-namespace", Value: "k8s.io"}, {Key: "k", Value: "v1"}, {Key: "k", Value: "v2"}},
	})
	negative, _ := proto.Marshal(&ttrpc.Request{Service: "s", Method: "m", TimeoutNano: -1})
	for _, seed := range [][]byte{valid, negative, nil, {0xff, 0xff, 0xff}, {0x0a, 0x05, 's'}, {0x2a, 0x02, 0x08, 0x01}, {0x20, 0x80}} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		got, err := decodeRequest(b)
		var want ttrpc.Request
		werr := proto.Unmarshal(b, &want)
		switch {
		case err != nil && werr == nil:
			t.Fatalf("decodeRequest refused what protobuf accepts (%v): %x", err, b)
		case err != nil || werr != nil:
			return
		}
		if string(got.service) != want.Service || string(got.method) != want.Method ||
			!bytes.Equal(got.payload, want.Payload) || got.timeout != want.TimeoutNano {
			t.Fatalf("decoded %q %q %x %d, protobuf %q %q %x %d", got.service, got.method, got.payload, got.timeout,
				want.Service, want.Method, want.Payload, want.TimeoutNano)
		}
		wantMD := ttrpc.MD{}
		for _, kv := range want.Metadata {
			wantMD.Append(kv.Key, kv.Value)
		}
		if len(got.metadata) != len(wantMD) {
			t.Fatalf("metadata %v, protobuf %v", got.metadata, wantMD)
		}
		for k, v := range wantMD {
			if !slices.Equal(got.metadata[k], v) {
				t.Fatalf("metadata %v, protobuf %v", got.metadata, wantMD)
			}
		}
	})
}

// A field number past protobuf's largest (2^29-1) is malformed: protobuf-go,
// and with it ttrpc, refuses the request, and so does the server, at the top
// level and inside metadata.
func TestDecodeRequestRefusesFieldNumbersTooLarge(t *testing.T) {
	tooLarge := []byte{0x80, 0x80, 0x80, 0x80, 0x10, 0x00} // field 2^29, varint 0
	for _, b := range [][]byte{
		tooLarge,
		append([]byte{0x0a, 0x01, 's'}, tooLarge...),
		append([]byte{0x2a, byte(3 + len(tooLarge)), 0x0a, 0x01, 'k'}, tooLarge...), // a metadata entry
	} {
		if err := proto.Unmarshal(b, &ttrpc.Request{}); err == nil {
			t.Fatalf("%x: protobuf accepts it; the test's bytes are wrong", b)
		}
		if _, err := decodeRequest(b); err == nil {
			t.Errorf("%x: accepted", b)
		}
	}
}

// Metadata that is not UTF-8 fails the request, as in ttrpc's server (its
// protobuf decoder refuses the string); valid metadata arrives with its key
// lower-cased, the form ttrpc.MD's Get looks up.
func TestDecodeRequestMetadataText(t *testing.T) {
	entry := func(k, v string) []byte {
		kv := append([]byte{0x0a, byte(len(k))}, k...)
		kv = append(append(kv, 0x12, byte(len(v))), v...)
		return append([]byte{0x2a, byte(len(kv))}, kv...)
	}
	for _, b := range [][]byte{entry("k", "v\xff"), entry("k\xff", "v")} {
		if err := proto.Unmarshal(b, &ttrpc.Request{}); err == nil {
			t.Fatalf("%x: protobuf accepts it; the test's bytes are wrong", b)
		}
		if _, err := decodeRequest(b); err == nil {
			t.Errorf("%x: accepted", b)
		}
	}
	r, err := decodeRequest(entry("Containerd-Namespace", "k8s.io"))
	if err != nil {
		t.Fatal(err)
	}
	if v, ok := r.metadata.Get("containerd-namespace"); !ok || !slices.Equal(v, []string{"k8s.io"}) {
		t.Errorf("metadata %v: no containerd-namespace k8s.io", r.metadata)
	}
}
