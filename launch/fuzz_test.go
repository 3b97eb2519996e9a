package launch

import (
	"slices"
	"strings"
	"testing"

	bootstrap "github.com/containerd/containerd/api/runtime/bootstrap/v1"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// Whatever arrives on start's stdin, decoding never panics, and a bootstrap
// is only ever taken when it names this very task.
func FuzzDecodeStartInput(f *testing.F) {
	legacy, _ := proto.Marshal(&anypb.Any{TypeUrl: "containerd.runc.v1.Options", Value: []byte{0x08, 0x01}})
	boot, _ := proto.Marshal(&bootstrap.BootstrapParams{InstanceID: "t1", Namespace: "ns",
		Extensions: []*bootstrap.Extension{{Value: &anypb.Any{TypeUrl: "x", Value: []byte{1}}}}})
	for _, seed := range [][]byte{nil, {}, legacy, boot, []byte("garbage"), {0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f}} {
		f.Add(seed, "t1", "ns")
	}
	f.Fuzz(func(t *testing.T, data []byte, id, ns string) {
		in := DecodeStartInput(data, id, ns)
		if in.Bootstrap != nil && (in.Bootstrap.InstanceID != id || id == "") {
			t.Fatalf("bootstrap for %q taken for task %q", in.Bootstrap.InstanceID, id)
		}
		a := ChooseAnswer(in, "2", "", "unix:///x")
		if _, err := a.Encode(); err != nil {
			t.Fatal(err)
		}
	})
}

func FuzzParseFlags(f *testing.F) {
	f.Add("-namespace ns -id t1 -address /a -debug start")
	f.Add("--id=x -bundle /b delete")
	f.Add("-info")
	f.Add("-unknown -- -v")
	f.Fuzz(func(t *testing.T, line string) {
		args := splitWords(line)
		fl, err := ParseFlags(args)
		// Only after "--" (end of flags) may a word starting with a dash be
		// the action.
		if err == nil && strings.HasPrefix(fl.Action, "-") && fl.Action != "-" && !slices.Contains(args, "--") {
			t.Fatalf("a flag %q taken as the action", fl.Action)
		}
	})
}

func splitWords(s string) []string { return strings.Fields(s) }
