package codec

import (
	"bytes"
	"math"
	"math/rand"
	"os/exec"
	"reflect"
	"strings"
	"testing"

	// containerd's own packages, for the messages mirrored under proto/api
	// and proto/cgroups: registered here so each mirror is compared with
	// containerd's type.
	_ "github.com/containerd/cgroups/v3/cgroup1/stats"
	_ "github.com/containerd/cgroups/v3/cgroup2/stats"
	_ "github.com/containerd/containerd/api/events"
	_ "github.com/containerd/containerd/api/runtime/bootstrap/v1"
	taskv2 "github.com/containerd/containerd/api/runtime/task/v2"
	_ "github.com/containerd/containerd/api/services/ttrpc/events/v1"
	_ "github.com/containerd/containerd/api/types"
	_ "github.com/containerd/containerd/api/types/runc/options"
	_ "github.com/containerd/containerd/api/types/runtimeoptions/v1"
	_ "github.com/containerd/containerd/api/types/task"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"

	shimtask "github.com/example/containerd-shim-example-v2/proto/api/runtime/task/v2"
	// protoc-gen-go's code for this project's own messages, for the same.
	_ "github.com/example/containerd-shim-example-v2/proto/group/v1/pb"
	_ "github.com/example/containerd-shim-example-v2/proto/introspect/v1/pb"
	_ "github.com/example/containerd-shim-example-v2/proto/options/v1/pb"
	_ "github.com/example/containerd-shim-example-v2/proto/sandbox/v1/pb"
	_ "github.com/example/containerd-shim-example-v2/proto/upgrade/v1/pb"
)

// twin returns a new protobuf-go message for the covered type of m:
// containerd's own type for a mirror under proto/api, m's type otherwise.
func twin(t testing.TB, m any) proto.Message {
	if pm, ok := m.(proto.Message); ok {
		return pm.ProtoReflect().New().Interface()
	}
	mt, err := protoregistry.GlobalTypes.FindMessageByName(protoreflect.FullName(MessageName(m)))
	if err != nil {
		t.Fatalf("%T: no protobuf-go type named %q: %v", m, MessageName(m), err)
	}
	return mt.New().Interface()
}

// fresh returns a new, empty value of m's type.
func fresh(m any) any { return reflect.New(reflect.TypeOf(m).Elem()).Interface() }

// asCovered returns p as a value of m's type: p itself when the codec covers
// p's type, else a mirror filled field by field (by Go name) from p.
func asCovered(p proto.Message, m any) any {
	if reflect.TypeOf(p) == reflect.TypeOf(m) {
		return p
	}
	out := fresh(m)
	copyValue(reflect.ValueOf(out), reflect.ValueOf(p))
	return out
}

func copyValue(d, s reflect.Value) {
	switch {
	case d.Type() == s.Type():
		d.Set(s)
	case d.Kind() == reflect.Pointer:
		if s.IsNil() {
			return
		}
		if d.IsNil() {
			d.Set(reflect.New(d.Type().Elem()))
		}
		de, se := d.Elem(), s.Elem()
		for i := 0; i < de.NumField(); i++ {
			copyValue(de.Field(i), se.FieldByName(de.Type().Field(i).Name))
		}
	case d.Kind() == reflect.Slice:
		if s.IsNil() {
			return
		}
		d.Set(reflect.MakeSlice(d.Type(), s.Len(), s.Len()))
		for i := 0; i < s.Len(); i++ {
			copyValue(d.Index(i), s.Index(i))
		}
	default: // an enum
		d.Set(s.Convert(d.Type()))
	}
}

// sameMessage reports whether got (of a covered type) holds what want holds:
// proto.Equal for protobuf-go types; for a mirror, field by field against
// containerd's message, nil and empty lists told apart.
func sameMessage(got any, want proto.Message) bool {
	if g, ok := got.(proto.Message); ok {
		return proto.Equal(g, want)
	}
	return sameValue(reflect.ValueOf(got), reflect.ValueOf(want))
}

var protoMessage = reflect.TypeOf((*proto.Message)(nil)).Elem()

func sameValue(g, w reflect.Value) bool {
	switch {
	case g.Type() == w.Type() && g.Type().Implements(protoMessage):
		if g.IsNil() || w.IsNil() {
			return g.IsNil() == w.IsNil()
		}
		return proto.Equal(g.Interface().(proto.Message), w.Interface().(proto.Message))
	case g.Kind() == reflect.Pointer:
		if g.IsNil() || w.IsNil() {
			return g.IsNil() == w.IsNil()
		}
		ge, we := g.Elem(), w.Elem()
		if ge.Kind() != reflect.Struct { // a proto3 optional scalar
			return sameValue(ge, we)
		}
		for i := 0; i < ge.NumField(); i++ {
			if !sameValue(ge.Field(i), we.FieldByName(ge.Type().Field(i).Name)) {
				return false
			}
		}
		return true
	case g.Kind() == reflect.Slice && g.Type().Elem().Kind() != reflect.Uint8:
		if g.IsNil() != w.IsNil() || g.Len() != w.Len() {
			return false
		}
		for i := 0; i < g.Len(); i++ {
			if !sameValue(g.Index(i), w.Index(i)) {
				return false
			}
		}
		return true
	case g.Kind() == reflect.Map: // map<string, string>; nil and empty alike, as in protobuf
		return g.Len() == w.Len() && (g.Len() == 0 || reflect.DeepEqual(g.Interface(), w.Interface()))
	case g.Kind() == reflect.Slice:
		return reflect.DeepEqual(g.Interface(), w.Interface())
	case g.Kind() == reflect.Float32 || g.Kind() == reflect.Float64:
		// Bit for bit: a NaN (which a broken encoding can hold) is never
		// == itself, and the decoders must keep its bits alike anyway.
		return math.Float64bits(g.Float()) == math.Float64bits(w.Convert(g.Type()).Float())
	}
	return g.Interface() == w.Convert(g.Type()).Interface()
}

// fill sets every field of m to random values; lists and maps get 0-3
// elements, messages nest to depth 3. With badUTF8, a string may hold bytes
// that are not UTF-8.
func fill(r *rand.Rand, m protoreflect.Message, depth int, badUTF8 bool) {
	fields := m.Descriptor().Fields()
	for i := 0; i < fields.Len(); i++ {
		fd := fields.Get(i)
		if r.Intn(4) == 0 {
			continue // left unset
		}
		switch {
		case fd.IsMap():
			mp := m.Mutable(fd).Map()
			for n := r.Intn(4); n > 0; n-- {
				mp.Set(protoreflect.ValueOfString(randString(r, badUTF8)).MapKey(), protoreflect.ValueOfString(randString(r, badUTF8)))
			}
		case fd.IsList():
			l := m.Mutable(fd).List()
			for n := r.Intn(4); n > 0; n-- {
				if fd.Message() != nil {
					if depth == 0 {
						break
					}
					e := l.NewElement()
					fill(r, e.Message(), depth-1, badUTF8)
					l.Append(e)
					continue
				}
				l.Append(scalarValue(r, fd, badUTF8))
			}
		case fd.Message() != nil:
			if depth == 0 {
				continue
			}
			fill(r, m.Mutable(fd).Message(), depth-1, badUTF8)
		default:
			m.Set(fd, scalarValue(r, fd, badUTF8))
		}
	}
}

func randString(r *rand.Rand, badUTF8 bool) string {
	b := make([]byte, r.Intn(20))
	for i := range b {
		b[i] = byte('a' + r.Intn(26))
	}
	s := string(b)
	if r.Intn(5) == 0 {
		s += "é✓"
	}
	if badUTF8 && r.Intn(3) == 0 {
		s += "\xff"
	}
	return s
}

func scalarValue(r *rand.Rand, fd protoreflect.FieldDescriptor, badUTF8 bool) protoreflect.Value {
	big := func() uint64 {
		switch r.Intn(4) {
		case 0:
			return 0
		case 1:
			return uint64(r.Intn(200))
		default:
			return r.Uint64()
		}
	}
	switch fd.Kind() {
	case protoreflect.BoolKind:
		return protoreflect.ValueOfBool(r.Intn(2) == 0)
	case protoreflect.EnumKind:
		return protoreflect.ValueOfEnum(protoreflect.EnumNumber(int32(big())))
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind:
		return protoreflect.ValueOfInt32(int32(big()))
	case protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		return protoreflect.ValueOfInt64(int64(big()))
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind:
		return protoreflect.ValueOfUint32(uint32(big()))
	case protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		return protoreflect.ValueOfUint64(big())
	case protoreflect.FloatKind:
		return protoreflect.ValueOfFloat32(float32(r.NormFloat64()))
	case protoreflect.DoubleKind:
		if r.Intn(5) == 0 {
			return protoreflect.ValueOfFloat64(math.Copysign(0, -1))
		}
		return protoreflect.ValueOfFloat64(r.NormFloat64())
	case protoreflect.StringKind:
		return protoreflect.ValueOfString(randString(r, badUTF8))
	case protoreflect.BytesKind:
		b := make([]byte, r.Intn(20))
		r.Read(b)
		return protoreflect.ValueOfBytes(b)
	}
	panic("kind " + fd.Kind().String())
}

var deterministic = proto.MarshalOptions{Deterministic: true}

// TestMatchesProto: for random messages of every covered type, the encoding
// is proto.Marshal's byte for byte, Size is its length, and decoding gives
// back an equal message; a string that is not UTF-8 fails both ways in both.
func TestMatchesProto(t *testing.T) {
	r := rand.New(rand.NewSource(1))
	for _, m0 := range allTypes() {
		proto0 := twin(t, m0)
		name := MessageName(m0)
		if want := string(proto.MessageName(proto0)); name != want {
			t.Errorf("MessageName = %q, want %q", name, want)
		}
		for i := 0; i < 300; i++ {
			p := proto0.ProtoReflect().New().Interface()
			fill(r, p.ProtoReflect(), 3, false)
			want, err := deterministic.Marshal(p)
			if err != nil {
				t.Fatalf("%s: proto.Marshal: %v", name, err)
			}
			m := asCovered(p, m0)
			got, err := Marshal(m)
			if err != nil {
				t.Fatalf("%s: Marshal: %v", name, err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("%s: Marshal\n got %x\nwant %x\nmessage %v", name, got, want, p)
			}
			if n := Size(m); n != len(want) {
				t.Fatalf("%s: Size = %d, want %d", name, n, len(want))
			}
			if got, _ := Append([]byte("prefix"), m); !bytes.Equal(got, append([]byte("prefix"), want...)) {
				t.Fatalf("%s: Append did not append", name)
			}
			back := fresh(m0)
			if err := Unmarshal(want, back); err != nil {
				t.Fatalf("%s: Unmarshal: %v", name, err)
			}
			if !sameMessage(back, p) {
				t.Fatalf("%s: Unmarshal\n got %+v\nwant %v", name, back, p)
			}

			bad := proto0.ProtoReflect().New().Interface()
			fill(r, bad.ProtoReflect(), 3, true)
			_, perr := proto.Marshal(bad)
			_, err = Marshal(asCovered(bad, m0))
			if (perr == nil) != (err == nil) {
				t.Fatalf("%s: Marshal of a message with invalid UTF-8: error %v, proto.Marshal's %v", name, err, perr)
			}
		}
	}
}

// TestMirrorsAreComplete: every field of containerd's message has a field of
// the same name in its mirror, so asCovered and sameMessage miss nothing.
func TestMirrorsAreComplete(t *testing.T) {
	mirrors := 0
	for _, m0 := range allTypes() {
		if _, ok := m0.(proto.Message); ok {
			continue
		}
		mirrors++
		pt := reflect.TypeOf(twin(t, m0)).Elem()
		mt := reflect.TypeOf(m0).Elem()
		for i := 0; i < pt.NumField(); i++ {
			f := pt.Field(i)
			if f.Tag.Get("protobuf") == "" {
				continue // protobuf-go's internal state
			}
			if _, ok := mt.FieldByName(f.Name); !ok {
				t.Errorf("%s: the mirror has no field %s", mt, f.Name)
			}
		}
		if p := mt.PkgPath(); !strings.HasPrefix(p, "github.com/example/containerd-shim-example-v2/proto/") || strings.HasSuffix(p, "/pb") {
			t.Errorf("%s: a mirror outside proto/, or in protoc-gen-go's pb/", mt)
		}
	}
	if mirrors < 40 {
		t.Fatalf("%d mirrored types; containerd's task API alone has more", mirrors)
	}
}

// TestNotAMessage: a value that is neither covered nor a protobuf-go message
// is refused, not encoded as nothing.
func TestNotAMessage(t *testing.T) {
	type notMsg struct{ ID string }
	if _, err := Marshal(&notMsg{ID: "x"}); err == nil {
		t.Fatal("Marshal accepted a plain struct")
	}
	if err := Unmarshal([]byte{0x0a, 0x01, 'x'}, &notMsg{}); err == nil {
		t.Fatal("Unmarshal accepted a plain struct")
	}
	if _, err := Append(nil, &notMsg{}); err == nil {
		t.Fatal("Append accepted a plain struct")
	}
}

// TestShimDoesNotLinkContainerdAPI: the daemon uses the mirrors, not
// containerd's (and containerd/cgroups', and protoc-gen-go's code for this
// project's own messages) generated packages, whose registration at start-up the
// mirrors exist to avoid. An import of one slips in easily (same names).
func TestShimDoesNotLinkContainerdAPI(t *testing.T) {
	if testing.Short() {
		t.Skip("runs go list")
	}
	out, err := exec.Command("go", "list", "-deps", "../../cmd/shim").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	for _, dep := range strings.Fields(string(out)) {
		if strings.HasPrefix(dep, "github.com/containerd/containerd/api/") || strings.HasPrefix(dep, "github.com/containerd/cgroups/") ||
			dep == "github.com/opencontainers/go-digest" || strings.HasSuffix(dep, "/pb") ||
			dep == "google.golang.org/protobuf/encoding/protojson" {
			t.Errorf("the shim links %s", dep)
		}
	}
}

// TestInvalidUTF8Refused: a string field whose bytes are not UTF-8 is
// refused on decoding, as proto.Unmarshal refuses it.
func TestInvalidUTF8Refused(t *testing.T) {
	b := []byte{0x0a, 0x02, 'a', 0xff} // CreateTaskRequest.id = "a\xff"
	if err := proto.Unmarshal(b, new(taskv2.CreateTaskRequest)); err == nil {
		t.Fatal("proto.Unmarshal accepted invalid UTF-8; the test's premise is wrong")
	}
	if err := Unmarshal(b, new(shimtask.CreateTaskRequest)); err == nil {
		t.Fatal("Unmarshal accepted invalid UTF-8")
	}
}

// TestNotCoveredFallsBack: a type the codec leaves out still works, through
// protobuf-go.
func TestNotCoveredFallsBack(t *testing.T) {
	m := &durationpb.Duration{Seconds: 3, Nanos: 4}
	if Covered(m) {
		t.Fatal("Duration is not among the shim's messages and should not be covered")
	}
	want, _ := proto.Marshal(m)
	got, err := Marshal(m)
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("Marshal = %x, %v; want %x", got, err, want)
	}
	back := new(durationpb.Duration)
	if err := Unmarshal(got, back); err != nil || !proto.Equal(back, m) {
		t.Fatalf("Unmarshal = %v, %v", back, err)
	}
	if MessageName(m) != "google.protobuf.Duration" {
		t.Fatalf("MessageName = %q", MessageName(m))
	}
}

// mutations yields broken variants of an encoding: truncated, with a byte
// changed, with bytes inserted.
func mutations(r *rand.Rand, b []byte) [][]byte {
	var out [][]byte
	if len(b) > 0 {
		out = append(out, b[:r.Intn(len(b))])
		c := append([]byte(nil), b...)
		c[r.Intn(len(c))] = byte(r.Intn(256))
		out = append(out, c)
	}
	ins := make([]byte, 1+r.Intn(4))
	r.Read(ins)
	at := 0
	if len(b) > 0 {
		at = r.Intn(len(b))
	}
	out = append(out, append(append(append([]byte(nil), b[:at]...), ins...), b[at:]...))
	return out
}

// TestBrokenInputLikeProto: broken encodings are refused or accepted as
// proto.Unmarshal refuses or accepts them, and what is accepted decodes to
// the same message.
func TestBrokenInputLikeProto(t *testing.T) {
	r := rand.New(rand.NewSource(2))
	for _, m0 := range allTypes() {
		proto0 := twin(t, m0)
		for i := 0; i < 300; i++ {
			m := proto0.ProtoReflect().New().Interface()
			fill(r, m.ProtoReflect(), 3, false)
			enc, _ := deterministic.Marshal(m)
			for _, b := range mutations(r, enc) {
				compareDecode(t, m0, b)
			}
		}
	}
}

// TestJoinedEncodingsMerge: two encodings of a message one after the other
// decode as their merge (a singular message field's two occurrences merged,
// repeated fields appended, the last scalar kept), as protobuf-go does.
func TestJoinedEncodingsMerge(t *testing.T) {
	r := rand.New(rand.NewSource(4))
	for _, m0 := range allTypes() {
		proto0 := twin(t, m0)
		for i := 0; i < 200; i++ {
			a := proto0.ProtoReflect().New().Interface()
			b := proto0.ProtoReflect().New().Interface()
			fill(r, a.ProtoReflect(), 3, false)
			fill(r, b.ProtoReflect(), 3, false)
			ea, _ := deterministic.Marshal(a)
			eb, _ := deterministic.Marshal(b)
			compareDecode(t, m0, append(ea, eb...))
		}
	}
}

func compareDecode(t testing.TB, m0 any, b []byte) {
	t.Helper()
	want := twin(t, m0)
	werr := proto.Unmarshal(b, want)
	got := fresh(m0)
	err := Unmarshal(b, got)
	if (werr == nil) != (err == nil) {
		t.Fatalf("%s: decoding %x: error %v, proto.Unmarshal's %v", MessageName(m0), b, err, werr)
	}
	// The codec drops fields it does not know; protobuf-go keeps them.
	dropUnknown(want.ProtoReflect())
	if err == nil && !sameMessage(got, want) {
		t.Fatalf("%s: decoding %x:\n got %+v\nwant %v", MessageName(m0), b, got, want)
	}
}

func dropUnknown(m protoreflect.Message) {
	m.SetUnknown(nil)
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case fd.IsMap():
			if fd.MapValue().Message() != nil {
				v.Map().Range(func(_ protoreflect.MapKey, e protoreflect.Value) bool {
					dropUnknown(e.Message())
					return true
				})
			}
		case fd.IsList() && fd.Message() != nil:
			for i := 0; i < v.List().Len(); i++ {
				dropUnknown(v.List().Get(i).Message())
			}
		case fd.Message() != nil:
			dropUnknown(v.Message())
		}
		return true
	})
}

// FuzzMerge compares decoding with proto.Unmarshal on arbitrary input; the
// first byte picks the message type.
func FuzzMerge(f *testing.F) {
	types := allTypes()
	r := rand.New(rand.NewSource(3))
	for i, m0 := range types {
		m := twin(f, m0)
		fill(r, m.ProtoReflect(), 2, false)
		enc, _ := deterministic.Marshal(m)
		f.Add(append([]byte{byte(i)}, enc...))
		f.Add(append(append([]byte{byte(i)}, enc...), enc...)) // merged with itself
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) == 0 {
			return
		}
		compareDecode(t, types[int(in[0])%len(types)], in[1:])
	})
}

// TestGeneratedIsCurrent fails when messages.gen.go or a mirror under
// proto/api is not what ./gen writes now (run `make proto`).
func TestGeneratedIsCurrent(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the generator")
	}
	if out, err := exec.Command("go", "run", "./gen", "-check", "..").CombinedOutput(); err != nil {
		t.Fatalf("go run ./gen -check: %v\n%s(run `make proto`)", err, out)
	}
}

// TestEmptyBytesLikeProto: an empty singular bytes field decodes to nil, an
// empty element of a repeated one to an empty slice, as in protobuf-go.
func TestEmptyBytesLikeProto(t *testing.T) {
	var want, got anypb.Any
	in := []byte{0x12, 0x00} // Any.value = ""
	if err := proto.Unmarshal(in, &want); err != nil {
		t.Fatal(err)
	}
	if err := Unmarshal(in, &got); err != nil {
		t.Fatal(err)
	}
	if (want.Value == nil) != (got.Value == nil) {
		t.Fatalf("Any.value: nil %v, protobuf-go's nil %v", got.Value == nil, want.Value == nil)
	}
}
