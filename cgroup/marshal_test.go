package cgroup

import (
	"bytes"
	"testing"

	v1 "github.com/containerd/cgroups/v3/cgroup1/stats"
	v2 "github.com/containerd/cgroups/v3/cgroup2/stats"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// fill sets every field of m, recursively, to a value of its own: scalars
// count up from *next (some past one byte, some past 127-byte lengths, so
// that long varints and long submessages are exercised), lists get two
// elements, submessages are set.
func fill(m protoreflect.Message, next *uint64) {
	fields := m.Descriptor().Fields()
	for i := 0; i < fields.Len(); i++ {
		fd := fields.Get(i)
		*next += 997
		n := *next
		val := func() protoreflect.Value {
			switch fd.Kind() {
			case protoreflect.Uint64Kind:
				return protoreflect.ValueOfUint64(n * 1000003)
			case protoreflect.Uint32Kind:
				return protoreflect.ValueOfUint32(uint32(n))
			case protoreflect.DoubleKind:
				return protoreflect.ValueOfFloat64(float64(n) / 7)
			case protoreflect.StringKind:
				return protoreflect.ValueOfString(string(bytes.Repeat([]byte{'a' + byte(n%26)}, int(n%40)+1)))
			}
			panic("fill: kind " + fd.Kind().String() + " of " + string(fd.FullName()))
		}
		switch {
		case fd.IsList():
			list := m.Mutable(fd).List()
			for range 2 {
				if fd.Message() != nil {
					e := list.NewElement()
					fill(e.Message(), next)
					list.Append(e)
				} else {
					list.Append(val())
				}
			}
		case fd.Message() != nil:
			fill(m.Mutable(fd).Message(), next)
		default:
			m.Set(fd, val())
		}
	}
}

// Every field, with every field set and with the usual sparse answers,
// encodes to the bytes proto.Marshal writes; and decodes back equal.
func TestMarshalMatchesProto(t *testing.T) {
	var next uint64
	full1, full2 := &v1.Metrics{}, &v2.Metrics{}
	fill(full1.ProtoReflect(), &next)
	fill(full2.ProtoReflect(), &next)
	sparse1 := &v1.Metrics{Pids: &v1.PidsStat{Current: 3}, CPU: &v1.CPUStat{Usage: &v1.CPUUsage{}},
		Memory: &v1.MemoryStat{Usage: &v1.MemoryEntry{Usage: 1 << 20}}}
	sparse2 := &v2.Metrics{Memory: &v2.MemoryStat{Usage: 4096, PSI: &v2.PSIStats{Some: &v2.PSIData{Avg10: 0.5}}},
		Io: &v2.IOStat{}}
	cases := []struct {
		name string
		m    proto.Message
		got  []byte
	}{
		{"v1 full", full1, MarshalV1(full1)},
		{"v1 sparse", sparse1, MarshalV1(sparse1)},
		{"v1 empty", &v1.Metrics{}, MarshalV1(&v1.Metrics{})},
		{"v2 full", full2, MarshalV2(full2)},
		{"v2 sparse", sparse2, MarshalV2(sparse2)},
		{"v2 empty", &v2.Metrics{}, MarshalV2(&v2.Metrics{})},
	}
	for _, tc := range cases {
		want, err := proto.MarshalOptions{Deterministic: true}.Marshal(tc.m)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(tc.got, want) {
			t.Errorf("%s: %d bytes differ from proto.Marshal's %d", tc.name, len(tc.got), len(want))
			continue
		}
		back := tc.m.ProtoReflect().New().Interface()
		if err := proto.Unmarshal(tc.got, back); err != nil || !proto.Equal(back, tc.m) {
			t.Errorf("%s: decodes to a different message (%v)", tc.name, err)
		}
	}
	if len(MarshalV1(full1)) < 1000 {
		t.Errorf("the full v1 message is only %d bytes: fill did not reach every field", len(MarshalV1(full1)))
	}
}
