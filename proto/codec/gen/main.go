// Command gen writes proto/codec/messages.gen.go: an encoder, a size
// function and a decoder for every message the shim exchanges with its
// callers, as plain Go over the generated structs' fields.
//
// Why: protobuf-go encodes and decodes through per-type tables it builds on a
// message type's first use, and building them unpacks the full descriptors of
// the type's whole .proto file. In a shim that is about 240 KB of heap built
// while serving its first requests and kept for its life, spread over many
// size classes, for a handful of message types. The code written here needs
// none of it.
//
// It reads each message's descriptor (field numbers, kinds, cardinality) from
// protobuf's registry and the Go field names from the structs' protobuf tags,
// at generation time only. Supported: proto3 scalars, strings, bytes, enums,
// messages, repeated fields (packed or not on input) and map<string, string>.
// A message with anything else (oneofs, proto3 optional, other maps) is left
// out, and so is every message that contains one: proto.Marshal keeps
// serving those.
//
// Run by `make proto` (scripts/genproto.sh) after protoc; TestGeneratedIsCurrent
// fails when the output is stale.
package main

import (
	"bytes"
	"fmt"
	"go/format"
	"os"
	"path"
	"path/filepath"
	"reflect"
	"sort"
	"strconv"
	"strings"

	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/known/emptypb"

	cgroup1stats "github.com/containerd/cgroups/v3/cgroup1/stats"
	cgroup2stats "github.com/containerd/cgroups/v3/cgroup2/stats"
	"github.com/containerd/containerd/api/events"
	bootstrap "github.com/containerd/containerd/api/runtime/bootstrap/v1"
	taskv2 "github.com/containerd/containerd/api/runtime/task/v2"
	eventsv1 "github.com/containerd/containerd/api/services/ttrpc/events/v1"
	"github.com/containerd/containerd/api/types"
	runcopts "github.com/containerd/containerd/api/types/runc/options"
	runtimeoptions "github.com/containerd/containerd/api/types/runtimeoptions/v1"

	group "github.com/example/containerd-shim-example-v2/proto/group/v1/pb"
	introspect "github.com/example/containerd-shim-example-v2/proto/introspect/v1/pb"
	options "github.com/example/containerd-shim-example-v2/proto/options/v1/pb"
	sandbox "github.com/example/containerd-shim-example-v2/proto/sandbox/v1/pb"
	upgrade "github.com/example/containerd-shim-example-v2/proto/upgrade/v1/pb"
)

// roots name the .proto files whose messages the codec covers, each by one of
// its messages; the messages their fields reach are covered too.
var roots = []proto.Message{
	&taskv2.CreateTaskRequest{},     // the task API (v3 has the same messages)
	&events.TaskExit{},              // task events
	&types.Envelope{},               // the event envelope
	&types.RuntimeInfo{},            // `-info`
	&eventsv1.ForwardRequest{},      // forwarding events to containerd
	&bootstrap.BootstrapResult{},    // `start`'s answer to containerd 2.x
	&runcopts.Options{},             // runc's options
	&runtimeoptions.Options{},       // CRI's runtime options
	&cgroup1stats.Metrics{},         // a task's statistics, cgroup v1
	&cgroup2stats.Metrics{},         // and v2
	&emptypb.Empty{},                // answers without content
	&status.Status{},                // error answers
	&sandbox.CreateSandboxRequest{}, // the Sandbox API
	&options.Options{},              // this shim's options
	&introspect.SnapshotRequest{},   // introspection
	&upgrade.UpgradeRequest{},       // in-place upgrade
	&group.JoinRequest{},            // a task joining its group's daemon
}

// main writes the codec (codec/messages.gen.go) and the mirrors of
// containerd's API packages (api/.../messages.gen.go) under the proto
// directory given as its argument; with -check it writes nothing and fails
// when a file differs from what it would write.
func main() {
	check := len(os.Args) > 1 && os.Args[1] == "-check"
	args := os.Args[1:]
	if check {
		args = args[1:]
	}
	if len(args) != 1 {
		fmt.Fprintln(os.Stderr, "usage: gen [-check] <proto directory>")
		os.Exit(2)
	}
	files, err := generate()
	if err != nil {
		fmt.Fprintln(os.Stderr, "gen:", err)
		os.Exit(1)
	}
	stale := 0
	for rel, src := range files {
		file := filepath.Join(args[0], rel)
		if check {
			if have, err := os.ReadFile(file); err != nil || !bytes.Equal(have, src) {
				fmt.Fprintln(os.Stderr, "gen: stale:", file)
				stale++
			}
			continue
		}
		if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
			fmt.Fprintln(os.Stderr, "gen:", err)
			os.Exit(1)
		}
		if err := os.WriteFile(file, src, 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "gen:", err)
			os.Exit(1)
		}
	}
	if stale > 0 {
		os.Exit(1)
	}
}

// optional reports a proto3 optional scalar or string: a pointer in Go, sent
// whenever it is set, even to its zero value.
func optional(fd protoreflect.FieldDescriptor) bool {
	return fd.HasOptionalKeyword() && fd.Message() == nil
}

// message is one covered message type.
type message struct {
	desc   protoreflect.MessageDescriptor
	goType reflect.Type // the struct, not the pointer
	fn     string       // suffix of its functions' names
}

type generator struct {
	messages map[protoreflect.FullName]*message
	order    []protoreflect.FullName
	imports  map[string]string // Go import path -> name used here
	skipped  map[protoreflect.FullName]string
	buf      bytes.Buffer
}

func generate() (map[string][]byte, error) {
	g := &generator{
		messages: map[protoreflect.FullName]*message{},
		imports:  map[string]string{},
		skipped:  map[protoreflect.FullName]string{},
	}
	for _, r := range roots {
		file := r.ProtoReflect().Descriptor().ParentFile()
		if err := g.addAll(file.Messages()); err != nil {
			return nil, err
		}
	}
	g.dropUnsupported()
	sort.Slice(g.order, func(i, j int) bool { return g.order[i] < g.order[j] })
	g.write()
	src, err := format.Source(g.buf.Bytes())
	if err != nil {
		return nil, fmt.Errorf("format: %w", err)
	}
	files, err := g.mirrors()
	if err != nil {
		return nil, err
	}
	files[filepath.Join("codec", "messages.gen.go")] = src
	return files, nil
}

func (g *generator) addAll(msgs protoreflect.MessageDescriptors) error {
	for i := 0; i < msgs.Len(); i++ {
		md := msgs.Get(i)
		if md.IsMapEntry() {
			continue
		}
		if err := g.add(md); err != nil {
			return err
		}
		if err := g.addAll(md.Messages()); err != nil {
			return err
		}
	}
	return nil
}

func (g *generator) add(md protoreflect.MessageDescriptor) error {
	if _, ok := g.messages[md.FullName()]; ok {
		return nil
	}
	mt, err := protoregistry.GlobalTypes.FindMessageByName(md.FullName())
	if err != nil {
		return fmt.Errorf("%s: %w", md.FullName(), err)
	}
	t := reflect.TypeOf(mt.New().Interface()).Elem()
	m := &message{desc: md, goType: t, fn: strings.ReplaceAll(string(md.FullName()), ".", "_")}
	g.messages[md.FullName()] = m
	g.order = append(g.order, md.FullName())
	fields := md.Fields()
	for i := 0; i < fields.Len(); i++ {
		fd := fields.Get(i)
		if fd.Message() != nil && !fd.IsMap() {
			if err := g.add(fd.Message()); err != nil {
				return err
			}
		}
	}
	return nil
}

// unsupported says why a message cannot be generated on its own.
func unsupported(md protoreflect.MessageDescriptor) string {
	fields := md.Fields()
	for i := 0; i < fields.Len(); i++ {
		fd := fields.Get(i)
		switch {
		case fd.ContainingOneof() != nil && !fd.ContainingOneof().IsSynthetic():
			return fmt.Sprintf("field %s is in a oneof", fd.Name())
		case fd.HasPresence() && fd.Message() == nil && (!fd.HasOptionalKeyword() || fd.Kind() == protoreflect.BytesKind):
			return fmt.Sprintf("field %s has presence", fd.Name())
		case fd.IsMap() && (fd.MapKey().Kind() != protoreflect.StringKind || fd.MapValue().Kind() != protoreflect.StringKind):
			return fmt.Sprintf("field %s is a map other than map<string, string>", fd.Name())
		case fd.Kind() == protoreflect.GroupKind:
			return fmt.Sprintf("field %s is a group", fd.Name())
		case fd.IsList() && fd.Message() == nil && fd.Kind() != protoreflect.StringKind && fd.Kind() != protoreflect.BytesKind && !fd.IsPacked():
			return fmt.Sprintf("field %s is a repeated scalar that is not packed", fd.Name())
		}
	}
	if md.Syntax() != protoreflect.Proto3 {
		return "not proto3"
	}
	return ""
}

// reachesItself reports a message whose fields lead back to it: the
// generated decoder has no depth limit (protobuf-go stops at 10000 levels).
func reachesItself(md protoreflect.MessageDescriptor) bool {
	seen := map[protoreflect.FullName]bool{}
	var walk func(protoreflect.MessageDescriptor) bool
	walk = func(m protoreflect.MessageDescriptor) bool {
		fields := m.Fields()
		for i := 0; i < fields.Len(); i++ {
			sub := fields.Get(i).Message()
			if sub == nil {
				continue
			}
			if sub.FullName() == md.FullName() {
				return true
			}
			if !seen[sub.FullName()] {
				seen[sub.FullName()] = true
				if walk(sub) {
					return true
				}
			}
		}
		return false
	}
	return walk(md)
}

// dropUnsupported removes the messages that cannot be generated and, until
// nothing changes, those whose fields reach a removed one.
func (g *generator) dropUnsupported() {
	for name, m := range g.messages {
		if why := unsupported(m.desc); why != "" {
			g.skipped[name] = why
		} else if reachesItself(m.desc) {
			g.skipped[name] = "it contains itself"
		}
	}
	for changed := true; changed; {
		changed = false
		for name, m := range g.messages {
			if _, gone := g.skipped[name]; gone {
				continue
			}
			fields := m.desc.Fields()
			for i := 0; i < fields.Len(); i++ {
				if sub := fields.Get(i).Message(); sub != nil && !fields.Get(i).IsMap() {
					if _, gone := g.skipped[sub.FullName()]; gone {
						g.skipped[name] = "field " + string(fields.Get(i).Name()) + " reaches " + string(sub.FullName())
						changed = true
						break
					}
				}
			}
		}
	}
	kept := g.order[:0]
	for _, name := range g.order {
		if _, gone := g.skipped[name]; !gone {
			kept = append(kept, name)
		}
	}
	g.order = kept
}

func (g *generator) p(format string, args ...any) {
	fmt.Fprintf(&g.buf, format, args...)
	g.buf.WriteByte('\n')
}

// pkg returns the name this file uses for a Go package, importing it.
func (g *generator) pkg(importPath string) string {
	if name, ok := g.imports[importPath]; ok {
		return name
	}
	base := path.Base(importPath)
	if len(base) >= 2 && base[0] == 'v' && base[1] >= '0' && base[1] <= '9' {
		base = path.Base(path.Dir(importPath)) + base
	}
	base = strings.NewReplacer("-", "", ".", "").Replace(base)
	name := base
	for n := 2; g.nameTaken(name); n++ {
		name = base + strconv.Itoa(n)
	}
	g.imports[importPath] = name
	return name
}

func (g *generator) nameTaken(name string) bool {
	switch name {
	case "protowire", "utf8", "math", "maps", "slices", "errors":
		return true
	}
	for _, n := range g.imports {
		if n == name {
			return true
		}
	}
	return false
}

// typeName is how this file names a message or enum type: containerd's API
// types by their mirrors under proto/api.
func (g *generator) typeName(t reflect.Type) string {
	p := t.PkgPath()
	if mp, ok := mirrorOf(p); ok {
		p = mp
	}
	return g.pkg(p) + "." + t.Name()
}

// goField finds the struct field that holds fd, by the number in its tag.
func goField(t reflect.Type, fd protoreflect.FieldDescriptor) reflect.StructField {
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag := f.Tag.Get("protobuf")
		if tag == "" {
			continue
		}
		parts := strings.Split(tag, ",")
		if len(parts) > 1 && parts[1] == strconv.Itoa(int(fd.Number())) {
			return f
		}
	}
	panic(fmt.Sprintf("%s: no Go field for %s", t, fd.FullName()))
}

// tagBytes is the Go literal of a field's key.
func tagBytes(num protoreflect.FieldNumber, typ protowire.Type) string {
	var parts []string
	for _, b := range protowire.AppendTag(nil, num, typ) {
		parts = append(parts, fmt.Sprintf("0x%02x", b))
	}
	return strings.Join(parts, ", ")
}

func tagLen(num protoreflect.FieldNumber) int { return protowire.SizeTag(num) }

// scalar describes how one kind of scalar goes on the wire.
type scalar struct {
	wire protowire.Type
	// toWire turns the Go value x into the uint64 the wire type carries.
	toWire string
	// fromWire turns the wire's uint64 v into the Go value; %s is the Go type.
	fromWire string
	// set is the proto3 test for "sent": the value is not the default.
	set string
}

func scalarOf(k protoreflect.Kind) (scalar, bool) {
	switch k {
	case protoreflect.BoolKind:
		return scalar{protowire.VarintType, "protowire.EncodeBool(x)", "%s(protowire.DecodeBool(v))", "x"}, true
	case protoreflect.EnumKind, protoreflect.Int32Kind:
		return scalar{protowire.VarintType, "uint64(int64(x))", "%s(int32(v))", "x != 0"}, true
	case protoreflect.Int64Kind:
		return scalar{protowire.VarintType, "uint64(x)", "%s(int64(v))", "x != 0"}, true
	case protoreflect.Uint32Kind:
		return scalar{protowire.VarintType, "uint64(x)", "%s(uint32(v))", "x != 0"}, true
	case protoreflect.Uint64Kind:
		return scalar{protowire.VarintType, "uint64(x)", "%s(v)", "x != 0"}, true
	case protoreflect.Sint32Kind:
		return scalar{protowire.VarintType, "protowire.EncodeZigZag(int64(x))", "%s(int32(protowire.DecodeZigZag(v & 0xffffffff)))", "x != 0"}, true
	case protoreflect.Sint64Kind:
		return scalar{protowire.VarintType, "protowire.EncodeZigZag(int64(x))", "%s(protowire.DecodeZigZag(v))", "x != 0"}, true
	case protoreflect.Fixed32Kind:
		return scalar{protowire.Fixed32Type, "uint64(x)", "%s(uint32(v))", "x != 0"}, true
	case protoreflect.Sfixed32Kind:
		return scalar{protowire.Fixed32Type, "uint64(uint32(x))", "%s(int32(uint32(v)))", "x != 0"}, true
	case protoreflect.FloatKind:
		return scalar{protowire.Fixed32Type, "uint64(math.Float32bits(float32(x)))", "%s(math.Float32frombits(uint32(v)))", "x != 0 || math.Signbit(float64(x))"}, true
	case protoreflect.Fixed64Kind:
		return scalar{protowire.Fixed64Type, "uint64(x)", "%s(v)", "x != 0"}, true
	case protoreflect.Sfixed64Kind:
		return scalar{protowire.Fixed64Type, "uint64(x)", "%s(int64(v))", "x != 0"}, true
	case protoreflect.DoubleKind:
		return scalar{protowire.Fixed64Type, "math.Float64bits(float64(x))", "%s(math.Float64frombits(v))", "x != 0 || math.Signbit(float64(x))"}, true
	}
	return scalar{}, false
}

// wireCode is how the generated code handles one scalar wire type: the
// type's name, its reader, and the size and append expressions of a value
// (%s in them).
type wireCode struct{ name, consume, size, append string }

var wireCodes = map[protowire.Type]wireCode{
	protowire.VarintType:  {"protowire.VarintType", "protowire.ConsumeVarint", "protowire.SizeVarint(%s)", "protowire.AppendVarint(b, %s)"},
	protowire.Fixed32Type: {"protowire.Fixed32Type", "consumeFixed32", "4", "protowire.AppendFixed32(b, uint32(%s))"},
	protowire.Fixed64Type: {"protowire.Fixed64Type", "protowire.ConsumeFixed64", "8", "protowire.AppendFixed64(b, %s)"},
}

// sizeOfWire is the Go expression for the encoded size of a wire value u.
func sizeOfWire(t protowire.Type, u string) string {
	return strings.ReplaceAll(wireCodes[t].size, "%s", u)
}

func appendWire(t protowire.Type, u string) string {
	return strings.ReplaceAll(wireCodes[t].append, "%s", u)
}

func consumeWire(t protowire.Type) string { return wireCodes[t].consume }

func wireName(t protowire.Type) string { return wireCodes[t].name }

func (g *generator) write() {
	g.p("// Code generated by proto/codec/gen. DO NOT EDIT.")
	g.p("")
	g.p("//lint:file-ignore SA1019 every field is encoded, deprecated ones too, as proto.Marshal does")
	g.p("")
	g.p("package codec")
	g.p("")
	// Imports are collected while the body is written.
	var body bytes.Buffer
	saved := g.buf
	g.buf = body
	g.writeDispatch()
	for _, name := range g.order {
		g.writeMessage(g.messages[name])
	}
	g.writeSkipped()
	body = g.buf
	g.buf = saved
	g.p("import (")
	g.p(`"maps"`)
	g.p(`"math"`)
	g.p(`"slices"`)
	g.p(`"unicode/utf8"`)
	g.p("")
	g.p(`"google.golang.org/protobuf/encoding/protowire"`)
	g.p("")
	var paths []string
	for p := range g.imports {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	for _, p := range paths {
		g.p("%s %q", g.imports[p], p)
	}
	g.p(")")
	g.p("")
	g.p("var (")
	g.p("_ = maps.Keys[map[string]string]")
	g.p("_ = math.Signbit")
	g.p("_ = slices.Sorted[string]")
	g.p("_ = utf8.ValidString")
	g.p(")")
	g.buf.Write(body.Bytes())
}

func (g *generator) writeDispatch() {
	g.typeSwitch("size returns the encoded size of m, and false for a type not covered.",
		"size(m any) (int, bool)", "m := m",
		func(m *message) string { return fmt.Sprintf("return size_%s(m), true", m.fn) }, "return 0, false")
	g.typeSwitch("appendTo appends m's encoding to b; false for a type not covered.",
		"appendTo(b []byte, m any) ([]byte, bool, error)", "m := m",
		func(m *message) string { return fmt.Sprintf("b, err := append_%s(b, m); return b, true, err", m.fn) }, "return b, false, nil")
	g.typeSwitch("merge decodes b into m; false for a type not covered.",
		"merge(b []byte, m any) (bool, error)", "m := m",
		func(m *message) string { return fmt.Sprintf("return true, merge_%s(b, m)", m.fn) }, "return false, nil")
	g.typeSwitch("name returns m's full protobuf name; false for a type not covered.",
		"name(m any) (string, bool)", "m",
		func(m *message) string { return fmt.Sprintf("return %q, true", string(m.desc.FullName())) }, `return "", false`)
	g.typeSwitch("isNil reports whether m is a nil pointer; false for a type not covered.",
		"isNil(m any) (bool, bool)", "m := m",
		func(m *message) string { return "return m == nil, true" }, "return false, false")
	g.p("// allTypes returns a new message of every covered type (for tests).")
	g.p("func allTypes() []any {")
	g.p("return []any{")
	for _, name := range g.order {
		g.p("new(%s),", g.typeName(g.messages[name].goType))
	}
	g.p("}")
	g.p("}")
	g.p("")
}

// typeSwitch writes a function that switches on its message's type, with a
// case per covered message and fallback for any other type.
func (g *generator) typeSwitch(doc, signature, subject string, body func(*message) string, fallback string) {
	g.p("// %s", doc)
	g.p("func %s {", signature)
	g.p("switch %s.(type) {", subject)
	for _, name := range g.order {
		m := g.messages[name]
		g.p("case *%s: %s", g.typeName(m.goType), body(m))
	}
	g.p("}")
	g.p("%s", fallback)
	g.p("}")
	g.p("")
}

func (g *generator) writeSkipped() {
	var names []string
	for n := range g.skipped {
		names = append(names, string(n))
	}
	sort.Strings(names)
	g.p("// Left to proto.Marshal and proto.Unmarshal:")
	for _, n := range names {
		g.p("//   %s: %s", n, g.skipped[protoreflect.FullName(n)])
	}
	if len(names) == 0 {
		g.p("// (none)")
	}
}

type field struct {
	fd   protoreflect.FieldDescriptor
	goF  reflect.StructField
	path string // "m.Name"
}

func messageFields(m *message) []field {
	fds := m.desc.Fields()
	var out []field
	for i := 0; i < fds.Len(); i++ {
		fd := fds.Get(i)
		f := goField(m.goType, fd)
		out = append(out, field{fd: fd, goF: f, path: "m." + f.Name})
	}
	// protobuf-go writes fields in number order.
	sort.Slice(out, func(i, j int) bool { return out[i].fd.Number() < out[j].fd.Number() })
	return out
}

func (g *generator) writeMessage(m *message) {
	fields := messageFields(m)
	tn := g.typeName(m.goType)

	// size
	g.p("func size_%s(m *%s) (n int) {", m.fn, tn)
	g.p("if m == nil { return 0 }")
	for _, f := range fields {
		g.writeSize(f)
	}
	g.p("return n")
	g.p("}")
	g.p("")

	// append
	g.p("func append_%s(b []byte, m *%s) ([]byte, error) {", m.fn, tn)
	g.p("if m == nil { return b, nil }")
	// Only a message field's append can fail and needs err (a string's
	// check returns its own error).
	for _, f := range fields {
		if f.fd.Message() != nil && !f.fd.IsMap() {
			g.p("var err error")
			break
		}
	}
	for _, f := range fields {
		g.writeAppend(m, f)
	}
	g.p("return b, nil")
	g.p("}")
	g.p("")

	// merge
	g.p("func merge_%s(b []byte, m *%s) error {", m.fn, tn)
	g.p("for len(b) > 0 {")
	g.p("num, typ, n, err := consumeTag(b)")
	g.p("if err != nil { return err }")
	g.p("b = b[n:]")
	g.p("switch {")
	for _, f := range fields {
		g.writeMerge(m, f)
	}
	g.p("default:")
	g.p("n = protowire.ConsumeFieldValue(num, typ, b)")
	g.p("}")
	g.p("if n < 0 { return protowire.ParseError(n) }")
	g.p("b = b[n:]")
	g.p("}")
	g.p("return nil")
	g.p("}")
	g.p("")
}

func (g *generator) subFn(fd protoreflect.FieldDescriptor) string {
	return g.messages[fd.Message().FullName()].fn
}

func (g *generator) writeSize(f field) {
	fd, tl := f.fd, tagLen(f.fd.Number())
	switch {
	case fd.IsMap():
		g.p("for k, v := range %s {", f.path)
		g.p("e := 1 + protowire.SizeBytes(len(k)) + 1 + protowire.SizeBytes(len(v))")
		g.p("n += %d + protowire.SizeBytes(e)", tl)
		g.p("}")
	case fd.IsList() && fd.Message() != nil:
		g.p("for _, e := range %s { n += %d + protowire.SizeBytes(size_%s(e)) }", f.path, tl, g.subFn(fd))
	case fd.IsList() && (fd.Kind() == protoreflect.StringKind || fd.Kind() == protoreflect.BytesKind):
		g.p("for _, e := range %s { n += %d + protowire.SizeBytes(len(e)) }", f.path, tl)
	case fd.IsList():
		sc, _ := scalarOf(fd.Kind())
		g.p("if len(%s) > 0 {", f.path)
		g.p("p := 0")
		g.p("for _, x := range %s { _ = x; p += %s }", f.path, sizeOfWire(sc.wire, sc.toWire))
		g.p("n += %d + protowire.SizeBytes(p)", tl)
		g.p("}")
	case fd.Message() != nil:
		g.p("if %s != nil { n += %d + protowire.SizeBytes(size_%s(%s)) }", f.path, tl, g.subFn(fd), f.path)
	case optional(fd) && fd.Kind() == protoreflect.StringKind:
		g.p("if %s != nil { n += %d + protowire.SizeBytes(len(*%s)) }", f.path, tl, f.path)
	case optional(fd):
		sc, _ := scalarOf(fd.Kind())
		g.p("if %s != nil { x := *%s; n += %d + %s }", f.path, f.path, tl, sizeOfWire(sc.wire, sc.toWire))
	case fd.Kind() == protoreflect.StringKind || fd.Kind() == protoreflect.BytesKind:
		g.p("if len(%s) > 0 { n += %d + protowire.SizeBytes(len(%s)) }", f.path, tl, f.path)
	default:
		sc, _ := scalarOf(fd.Kind())
		g.p("if x := %s; %s { n += %d + %s }", f.path, sc.set, tl, sizeOfWire(sc.wire, sc.toWire))
	}
}

// utf8Check is the test that a string field holds valid UTF-8, which proto3
// requires on both ends; ret is what the function returns before the error.
func (g *generator) utf8Check(fd protoreflect.FieldDescriptor, v, fn, ret string) string {
	if fd.Kind() != protoreflect.StringKind {
		return ""
	}
	return fmt.Sprintf("if !utf8.%s(%s) { return %serrUTF8(%q) }", fn, v, ret, string(fd.FullName()))
}

func (g *generator) writeAppend(m *message, f field) {
	fd := f.fd
	num := fd.Number()
	switch {
	case fd.IsMap():
		g.p("if len(%s) > 0 {", f.path)
		g.p("for _, k := range slices.Sorted(maps.Keys(%s)) {", f.path)
		g.p("v := %s[k]", f.path)
		g.p("if !utf8.ValidString(k) || !utf8.ValidString(v) { return b, errUTF8(%q) }", string(fd.FullName()))
		g.p("b = append(b, %s)", tagBytes(num, protowire.BytesType))
		g.p("b = protowire.AppendVarint(b, uint64(1 + protowire.SizeBytes(len(k)) + 1 + protowire.SizeBytes(len(v))))")
		g.p("b = append(b, 0x0a)")
		g.p("b = protowire.AppendString(b, k)")
		g.p("b = append(b, 0x12)")
		g.p("b = protowire.AppendString(b, v)")
		g.p("}")
		g.p("}")
	case fd.IsList() && fd.Message() != nil:
		sub := g.subFn(fd)
		g.p("for _, e := range %s {", f.path)
		g.p("b = append(b, %s)", tagBytes(num, protowire.BytesType))
		g.p("b = protowire.AppendVarint(b, uint64(size_%s(e)))", sub)
		g.p("if b, err = append_%s(b, e); err != nil { return b, err }", sub)
		g.p("}")
	case fd.IsList() && (fd.Kind() == protoreflect.StringKind || fd.Kind() == protoreflect.BytesKind):
		g.p("for _, e := range %s {", f.path)
		if c := g.utf8Check(fd, "e", "ValidString", "b, "); c != "" {
			g.p("%s", c)
		}
		g.p("b = append(b, %s)", tagBytes(num, protowire.BytesType))
		if fd.Kind() == protoreflect.StringKind {
			g.p("b = protowire.AppendString(b, e)")
		} else {
			g.p("b = protowire.AppendBytes(b, e)")
		}
		g.p("}")
	case fd.IsList():
		sc, _ := scalarOf(fd.Kind())
		g.p("if len(%s) > 0 {", f.path)
		g.p("p := 0")
		g.p("for _, x := range %s { _ = x; p += %s }", f.path, sizeOfWire(sc.wire, sc.toWire))
		g.p("b = append(b, %s)", tagBytes(num, protowire.BytesType))
		g.p("b = protowire.AppendVarint(b, uint64(p))")
		g.p("for _, x := range %s { b = %s }", f.path, appendWire(sc.wire, sc.toWire))
		g.p("}")
	case fd.Message() != nil:
		sub := g.subFn(fd)
		g.p("if %s != nil {", f.path)
		g.p("b = append(b, %s)", tagBytes(num, protowire.BytesType))
		g.p("b = protowire.AppendVarint(b, uint64(size_%s(%s)))", sub, f.path)
		g.p("if b, err = append_%s(b, %s); err != nil { return b, err }", sub, f.path)
		g.p("}")
	case optional(fd) && fd.Kind() == protoreflect.StringKind:
		g.p("if %s != nil {", f.path)
		g.p("%s", g.utf8Check(fd, "*"+f.path, "ValidString", "b, "))
		g.p("b = append(b, %s)", tagBytes(num, protowire.BytesType))
		g.p("b = protowire.AppendString(b, *%s)", f.path)
		g.p("}")
	case optional(fd):
		sc, _ := scalarOf(fd.Kind())
		g.p("if %s != nil {", f.path)
		g.p("x := *%s", f.path)
		g.p("b = append(b, %s)", tagBytes(num, sc.wire))
		g.p("b = %s", appendWire(sc.wire, sc.toWire))
		g.p("}")
	case fd.Kind() == protoreflect.StringKind || fd.Kind() == protoreflect.BytesKind:
		g.p("if len(%s) > 0 {", f.path)
		if c := g.utf8Check(fd, f.path, "ValidString", "b, "); c != "" {
			g.p("%s", c)
		}
		g.p("b = append(b, %s)", tagBytes(num, protowire.BytesType))
		if fd.Kind() == protoreflect.StringKind {
			g.p("b = protowire.AppendString(b, %s)", f.path)
		} else {
			g.p("b = protowire.AppendBytes(b, %s)", f.path)
		}
		g.p("}")
	default:
		sc, _ := scalarOf(fd.Kind())
		g.p("if x := %s; %s {", f.path, sc.set)
		g.p("b = append(b, %s)", tagBytes(num, sc.wire))
		g.p("b = %s", appendWire(sc.wire, sc.toWire))
		g.p("}")
	}
}

// goElem is the Go type of one element of a field (the field's type for a
// singular one), as written in this file.
func (g *generator) goElem(t reflect.Type) string {
	if (t.Kind() == reflect.Slice && t.Elem().Kind() != reflect.Uint8) || t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t.PkgPath() != "" {
		return g.typeName(t)
	}
	return t.String()
}

func (g *generator) writeMerge(m *message, f field) {
	fd := f.fd
	num := fd.Number()
	switch {
	case fd.IsMap():
		g.p("case num == %d && typ == protowire.BytesType:", num)
		g.p("var v []byte")
		g.p("if v, n = protowire.ConsumeBytes(b); n < 0 { break }")
		g.p("if %s == nil { %s = map[string]string{} }", f.path, f.path)
		g.p("if err := mergeStringMapEntry(v, %s, %q); err != nil { return err }", f.path, string(fd.FullName()))
	case fd.Message() != nil:
		sub := g.subFn(fd)
		subType := g.typeName(g.messages[fd.Message().FullName()].goType)
		g.p("case num == %d && typ == protowire.BytesType:", num)
		g.p("var v []byte")
		g.p("if v, n = protowire.ConsumeBytes(b); n < 0 { break }")
		if fd.IsList() {
			g.p("e := new(%s)", subType)
			g.p("if err := merge_%s(v, e); err != nil { return err }", sub)
			g.p("%s = append(%s, e)", f.path, f.path)
		} else {
			g.p("if %s == nil { %s = new(%s) }", f.path, f.path, subType)
			g.p("if err := merge_%s(v, %s); err != nil { return err }", sub, f.path)
		}
	case fd.Kind() == protoreflect.StringKind || fd.Kind() == protoreflect.BytesKind:
		g.p("case num == %d && typ == protowire.BytesType:", num)
		g.p("var v []byte")
		g.p("if v, n = protowire.ConsumeBytes(b); n < 0 { break }")
		if c := g.utf8Check(fd, "v", "Valid", ""); c != "" {
			g.p("%s", c)
		}
		var val string
		if fd.Kind() == protoreflect.StringKind {
			val = g.goElem(f.goF.Type) + "(v)"
		} else if fd.IsList() {
			// protobuf-go keeps each element of a repeated bytes field non-nil.
			val = "append([]byte{}, v...)"
		} else {
			// and a singular one nil when it is empty.
			val = "append([]byte(nil), v...)"
		}
		switch {
		case fd.IsList():
			g.p("%s = append(%s, %s)", f.path, f.path, val)
		case optional(fd):
			g.p("s := %s", val)
			g.p("%s = &s", f.path)
		default:
			g.p("%s = %s", f.path, val)
		}
	case fd.IsList():
		sc, _ := scalarOf(fd.Kind())
		elem := g.goElem(f.goF.Type)
		conv := convert(sc.fromWire, elem)
		g.p("case num == %d && typ == protowire.BytesType:", num)
		g.p("var v []byte")
		g.p("if v, n = protowire.ConsumeBytes(b); n < 0 { break }")
		g.p("for len(v) > 0 {")
		g.p("x, k := %s(v)", consumeWire(sc.wire))
		g.p("if k < 0 { return protowire.ParseError(k) }")
		g.p("v = v[k:]")
		g.p("{")
		g.p("v := x")
		g.p("%s = append(%s, %s)", f.path, f.path, conv)
		g.p("}")
		g.p("}")
		g.p("case num == %d && typ == %s:", num, wireName(sc.wire))
		g.p("var v uint64")
		g.p("if v, n = %s(b); n < 0 { break }", consumeWire(sc.wire))
		g.p("%s = append(%s, %s)", f.path, f.path, conv)
	default:
		sc, _ := scalarOf(fd.Kind())
		conv := convert(sc.fromWire, g.goElem(f.goF.Type))
		g.p("case num == %d && typ == %s:", num, wireName(sc.wire))
		g.p("var v uint64")
		g.p("if v, n = %s(b); n < 0 { break }", consumeWire(sc.wire))
		if optional(fd) {
			g.p("x := %s", conv)
			g.p("%s = &x", f.path)
		} else {
			g.p("%s = %s", f.path, conv)
		}
	}
}

// convert is the Go conversion of a wire value to a field of type elem,
// without a conversion to the type it already has.
func convert(pattern, elem string) string {
	conv := fmt.Sprintf(pattern, elem)
	if strings.HasPrefix(conv, elem+"("+elem+"(") {
		conv = conv[len(elem)+1 : len(conv)-1]
	}
	return conv
}
