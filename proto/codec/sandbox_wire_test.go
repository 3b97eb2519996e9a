package codec

import (
	"testing"

	csandbox "github.com/containerd/containerd/api/runtime/sandbox/v1"
	ctypes "github.com/containerd/containerd/api/types"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/known/anypb"

	sandboxv1 "github.com/example/containerd-shim-example-v2/proto/sandbox/v1"
	sandboxpb "github.com/example/containerd-shim-example-v2/proto/sandbox/v1/pb"
)

// containerdTwin is the message of containerd's API (or protobuf's) that a
// message of the shim's sandbox copy stands for: the same short name in the
// Sandbox API's package, else in containerd's types, else protobuf's.
func containerdTwin(md protoreflect.MessageDescriptor) protoreflect.MessageDescriptor {
	for _, pkg := range []string{"containerd.runtime.sandbox.v1.", "containerd.types.", "google.protobuf."} {
		if d, err := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName(pkg + string(md.Name()))); err == nil {
			if m, ok := d.(protoreflect.MessageDescriptor); ok {
				return m
			}
		}
	}
	return nil
}

// TestSandboxCopyIsWireCompatible: every field of every message of
// proto/sandbox/v1 has the field of the same number in containerd's message,
// with the same name, kind and cardinality (a field the copy leaves out is
// skipped on the wire, which is allowed; a field that differs would be
// misread).
func TestSandboxCopyIsWireCompatible(t *testing.T) {
	msgs := sandboxpb.File_sandbox_v1_sandbox_proto.Messages()
	if msgs.Len() < 20 {
		t.Fatalf("%d messages in the sandbox copy; the Sandbox API alone has more", msgs.Len())
	}
	for i := 0; i < msgs.Len(); i++ {
		ours := msgs.Get(i)
		theirs := containerdTwin(ours)
		if theirs == nil {
			t.Errorf("%s: no message of that name in containerd's API", ours.FullName())
			continue
		}
		for j := 0; j < ours.Fields().Len(); j++ {
			f := ours.Fields().Get(j)
			g := theirs.Fields().ByNumber(f.Number())
			switch {
			case g == nil:
				t.Errorf("%s.%s: %s has no field %d", ours.Name(), f.Name(), theirs.FullName(), f.Number())
			case g.Name() != f.Name() || g.Kind() != f.Kind() || g.Cardinality() != f.Cardinality():
				t.Errorf("%s.%s (%d): %s %s here, %s %s %s in %s", ours.Name(), f.Name(), f.Number(),
					f.Cardinality(), f.Kind(), g.Cardinality(), g.Kind(), g.Name(), theirs.FullName())
			case f.Kind() == protoreflect.MessageKind && f.Message().Name() != g.Message().Name():
				t.Errorf("%s.%s: message %s here, %s in containerd's", ours.Name(), f.Name(), f.Message().Name(), g.Message().FullName())
			}
		}
	}
}

// TestUpdateSandboxRequestFromContainerd: what containerd 2.4 sends after a
// pod resize (its whole Sandbox record, extensions included) decodes into the
// copy, which keeps the id and the field paths and skips the record.
func TestUpdateSandboxRequestFromContainerd(t *testing.T) {
	ext, err := anypb.New(&ctypes.Mount{Type: "stand-in", Source: "for CRI's UpdatedResources"})
	if err != nil {
		t.Fatal(err)
	}
	wire, err := proto.Marshal(&csandbox.UpdateSandboxRequest{
		SandboxID: "pod-1",
		Sandbox: &ctypes.Sandbox{
			SandboxID:  "pod-1",
			Runtime:    &ctypes.Sandbox_Runtime{Name: "io.example.v2", Options: ext},
			Spec:       ext,
			Labels:     map[string]string{"io.kubernetes.pod.name": "p"},
			Extensions: map[string]*anypb.Any{"updated-resources": ext},
			Sandboxer:  "shim",
		},
		Fields: []string{"extensions"},
	})
	if err != nil {
		t.Fatal(err)
	}
	var got sandboxv1.UpdateSandboxRequest
	if err := Unmarshal(wire, &got); err != nil {
		t.Fatalf("Unmarshal: %v", err)
	}
	if got.SandboxId != "pod-1" || len(got.Fields) != 1 || got.Fields[0] != "extensions" {
		t.Errorf("decoded %+v, want sandbox id pod-1 and fields [extensions]", got)
	}
}
