package main

// Mirrors: containerd's API messages, and containerd/cgroups' metrics, as
// plain Go structs.
//
// Why: linking a protoc-gen-go package registers its .proto files at every
// start-up (descriptors, registries, the messages' type tables), whether a
// message is used or not. containerd's API packages the shim needs cost an
// idle shim about 0.4 MiB of anonymous memory that way (measured in
// docs/benchmarks.md, "Where the bytes go"), a fifth of its footprint, and
// they pull in go-digest's regular expressions and descriptorpb; cgroups'
// two metrics.proto files another 50 KiB or so. The codec
// already encodes and decodes every message itself, so the shim needs
// containerd's messages only as Go types. Each mirrored package has the same
// import path under proto/api as under containerd's api module, the same
// package name, and types, fields, enum constants and getters spelled as
// protoc-gen-go spells them, so the shim's code reads as it would with
// containerd's packages. containerd's modules stay the source of truth: this
// generator reads their descriptors and structs, and the codec's tests
// compare every mirrored type's encoding with proto.Marshal of containerd's.
//
// This project's own messages (proto/<name>/v1/*.proto) are mirrored the
// same way: protoc-gen-go's code goes to proto/<name>/v1/pb, which only the
// generator and tests link, and the shim's structs to proto/<name>/v1.
//
// What is not mirrored: the well-known types (Any, Timestamp, Empty) and
// google.rpc.Status, which ttrpc links anyway.

import (
	"bytes"
	"fmt"
	"go/format"
	"path"
	"reflect"
	"sort"
	"strconv"
	"strings"

	"google.golang.org/protobuf/reflect/protoreflect"
)

// mirrored maps the module paths whose generated packages are mirrored to
// the directory their mirrors go to, under this module's proto/.
var mirrored = []struct{ from, to string }{
	{"github.com/containerd/containerd/api/", "api/"},
	{"github.com/containerd/cgroups/v3/", "cgroups/"},
}

const protoDir = "github.com/example/containerd-shim-example-v2/proto/"

// mirrorOf returns the import path of the mirror of a generated package:
// containerd's by the table above, and this project's own (protoc-gen-go's
// code in proto/<name>/v1/pb) one directory up, beside its .proto.
func mirrorOf(pkgPath string) (string, bool) {
	if rest, ok := strings.CutPrefix(pkgPath, protoDir); ok {
		if own, ok := strings.CutSuffix(rest, "/pb"); ok {
			return protoDir + own, true
		}
	}
	for _, m := range mirrored {
		if rest, ok := strings.CutPrefix(pkgPath, m.from); ok {
			return protoDir + m.to + rest, true
		}
	}
	return "", false
}

// packageName is the Go package name of an import path as protoc-gen-go
// names containerd's: the last element, or the one before a version.
func packageName(importPath string) string {
	base := path.Base(importPath)
	if len(base) >= 2 && base[0] == 'v' && base[1] >= '0' && base[1] <= '9' {
		base = path.Base(path.Dir(importPath))
	}
	return base
}

// mirrorFile is the generated source of one mirrored package.
type mirrorFile struct {
	importPath string // the mirror's
	origin     string // containerd's
	messages   []*message
	enums      map[reflect.Type]protoreflect.EnumDescriptor
	imports    map[string]string
}

// mirrors returns the generated files, keyed by their path relative to the
// proto directory.
func (g *generator) mirrors() (map[string][]byte, error) {
	files := map[string]*mirrorFile{}
	fileOf := func(origin string) *mirrorFile {
		mp, _ := mirrorOf(origin)
		f := files[mp]
		if f == nil {
			f = &mirrorFile{importPath: mp, origin: origin, enums: map[reflect.Type]protoreflect.EnumDescriptor{}, imports: map[string]string{}}
			files[mp] = f
		}
		return f
	}
	for _, name := range g.order {
		m := g.messages[name]
		if _, ok := mirrorOf(m.goType.PkgPath()); !ok {
			continue
		}
		fileOf(m.goType.PkgPath()).messages = append(fileOf(m.goType.PkgPath()).messages, m)
		fds := m.desc.Fields()
		for i := 0; i < fds.Len(); i++ {
			fd := fds.Get(i)
			if fd.Enum() == nil {
				continue
			}
			t := goField(m.goType, fd).Type
			for t.Kind() == reflect.Slice || t.Kind() == reflect.Pointer {
				t = t.Elem()
			}
			if _, ok := mirrorOf(t.PkgPath()); !ok {
				return nil, fmt.Errorf("%s: enum %s is not in a mirrored package", fd.FullName(), t)
			}
			fileOf(t.PkgPath()).enums[t] = fd.Enum()
		}
	}
	out := map[string][]byte{}
	for mp, f := range files {
		src, err := f.write()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", mp, err)
		}
		out[path.Join(strings.TrimPrefix(mp, protoDir), "messages.gen.go")] = src
	}
	return out, nil
}

// typeExpr is the Go spelling of t inside the mirror file, with containerd's
// API types replaced by their mirrors.
func (f *mirrorFile) typeExpr(t reflect.Type) string {
	switch t.Kind() {
	case reflect.Pointer:
		return "*" + f.typeExpr(t.Elem())
	case reflect.Slice:
		if t.Elem().Kind() == reflect.Uint8 && t.Elem().PkgPath() == "" {
			return "[]byte"
		}
		return "[]" + f.typeExpr(t.Elem())
	case reflect.Map:
		return "map[" + f.typeExpr(t.Key()) + "]" + f.typeExpr(t.Elem())
	}
	if t.PkgPath() == "" {
		return t.String()
	}
	p := t.PkgPath()
	if mp, ok := mirrorOf(p); ok {
		p = mp
	}
	if p == f.importPath {
		return t.Name()
	}
	return f.importName(p) + "." + t.Name()
}

func (f *mirrorFile) importName(p string) string {
	if n, ok := f.imports[p]; ok {
		return n
	}
	base := packageName(p)
	if mp, ok := strings.CutPrefix(p, protoDir); ok {
		// Two mirrored packages may share a name (task, events): qualify.
		base = strings.NewReplacer("/", "", ".", "").Replace(mp)
	}
	name := base
	for n := 2; ; n++ {
		taken := name == packageName(f.importPath)
		for _, used := range f.imports {
			taken = taken || used == name
		}
		if !taken {
			break
		}
		name = base + strconv.Itoa(n)
	}
	f.imports[p] = name
	return name
}

// jsonTag names a field as protojson does (lowerCamelCase, singular 64-bit
// integers as strings, every field written), so that encoding/json writes a
// mirror as protojson would with EmitUnpopulated: the `introspect` action
// prints its snapshot that way (with nil lists made empty). Only for the
// kinds the introspection uses: repeated 64-bit integers, nil bytes, unknown
// enum values and the well-known types still differ from protojson's.
func jsonTag(fd protoreflect.FieldDescriptor) string {
	tag := fd.JSONName()
	switch fd.Kind() {
	case protoreflect.Int64Kind, protoreflect.Uint64Kind, protoreflect.Sint64Kind,
		protoreflect.Fixed64Kind, protoreflect.Sfixed64Kind:
		if !fd.IsList() {
			tag += ",string"
		}
	}
	return tag
}

// zero is the Go zero value of a field of type t, as a getter returns it.
func zero(t reflect.Type) string {
	switch t.Kind() {
	case reflect.Pointer, reflect.Slice, reflect.Map:
		return "nil"
	case reflect.String:
		return `""`
	case reflect.Bool:
		return "false"
	}
	return "0"
}

func (f *mirrorFile) write() ([]byte, error) {
	var body bytes.Buffer
	p := func(format string, args ...any) {
		fmt.Fprintf(&body, format, args...)
		body.WriteByte('\n')
	}

	var enums []reflect.Type
	for t := range f.enums {
		enums = append(enums, t)
	}
	sort.Slice(enums, func(i, j int) bool { return enums[i].Name() < enums[j].Name() })
	for _, t := range enums {
		ed := f.enums[t]
		// protoc-gen-go prefixes a top-level enum's values with the enum's
		// name, and a nested one's with its message's (M_E's are M_VALUE).
		prefix := t.Name()
		if _, nested := ed.Parent().(protoreflect.MessageDescriptor); nested {
			prefix = strings.TrimSuffix(prefix, "_"+string(ed.Name()))
		}
		p("// %s is %s.", t.Name(), ed.FullName())
		p("type %s int32", t.Name())
		p("")
		p("const (")
		values := ed.Values()
		for i := 0; i < values.Len(); i++ {
			v := values.Get(i)
			p("%s_%s %s = %d", prefix, v.Name(), t.Name(), v.Number())
		}
		p(")")
		p("")
		p("// String returns the value's name in the .proto file, or its number.")
		p("func (x %s) String() string {", t.Name())
		p("switch x {")
		for i := 0; i < values.Len(); i++ {
			v := values.Get(i)
			p("case %s_%s: return %q", prefix, v.Name(), string(v.Name()))
		}
		p("}")
		p("return strconv.Itoa(int(x))")
		p("}")
		p("")
		p("// MarshalText writes the value's name, as protojson does.")
		p("func (x %s) MarshalText() ([]byte, error) { return []byte(x.String()), nil }", t.Name())
		p("")
	}

	sort.Slice(f.messages, func(i, j int) bool { return f.messages[i].goType.Name() < f.messages[j].goType.Name() })
	for _, m := range f.messages {
		name := m.goType.Name()
		fields := messageFields(m)
		p("// %s is %s.", name, m.desc.FullName())
		p("type %s struct {", name)
		for _, fl := range fields {
			p("%s %s `json:%q`", fl.goF.Name, f.typeExpr(fl.goF.Type), jsonTag(fl.fd))
		}
		p("}")
		p("")
		for _, fl := range fields {
			if t := fl.goF.Type; optional(fl.fd) {
				// A proto3 optional scalar: a pointer, read through.
				p("func (x *%s) Get%s() %s { if x != nil && x.%s != nil { return *x.%s }; return %s }",
					name, fl.goF.Name, f.typeExpr(t.Elem()), fl.goF.Name, fl.goF.Name, zero(t.Elem()))
				continue
			}
			p("func (x *%s) Get%s() %s { if x != nil { return x.%s }; return %s }",
				name, fl.goF.Name, f.typeExpr(fl.goF.Type), fl.goF.Name, zero(fl.goF.Type))
		}
		p("")
	}

	var src bytes.Buffer
	fmt.Fprintf(&src, "// Code generated by proto/codec/gen. DO NOT EDIT.\n\n")
	fmt.Fprintf(&src, "// Package %s holds the messages of\n// %s\n", packageName(f.importPath), f.origin)
	fmt.Fprintf(&src, "// as plain Go structs for the shim's own codec (proto/codec): the same names\n")
	fmt.Fprintf(&src, "// and fields, without protobuf-go's registration at every start-up. Written\n")
	fmt.Fprintf(&src, "// by proto/codec/gen from that package's descriptors (`make proto`); the\n")
	fmt.Fprintf(&src, "// codec's tests compare the encodings with it.\n")
	fmt.Fprintf(&src, "package %s\n\n", packageName(f.importPath))
	var paths []string
	for ip := range f.imports {
		paths = append(paths, ip)
	}
	sort.Strings(paths)
	if len(paths) > 0 || len(enums) > 0 {
		src.WriteString("import (\n")
		if len(enums) > 0 {
			src.WriteString("\"strconv\"\n\n")
		}
		for _, ip := range paths {
			fmt.Fprintf(&src, "%s %q\n", f.imports[ip], ip)
		}
		src.WriteString(")\n\n")
	}
	src.Write(body.Bytes())
	out, err := format.Source(src.Bytes())
	if err != nil {
		return src.Bytes(), fmt.Errorf("format: %w", err)
	}
	return out, nil
}
