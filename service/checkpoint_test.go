package service

import (
	"reflect"
	"testing"

	runcopts "github.com/containerd/containerd/api/types/runc/options"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/example/containerd-shim-example-v2/oci"
	taskapi "github.com/example/containerd-shim-example-v2/proto/api/runtime/task/v2"
)

// Every field of containerd's CheckpointOptions reaches the runtime's
// command line; the stock shim passes parent_path on as --parent-path (an
// incremental dump against an earlier image), so dropping it made every
// dump a full one.
func TestCheckpointOptionsCarryEveryField(t *testing.T) {
	in := &runcopts.CheckpointOptions{
		Exit: true, OpenTcp: true, ExternalUnixSockets: true, Terminal: true, FileLocks: true,
		EmptyNamespaces: []string{"network"}, CgroupsMode: "soft",
		ImagePath: "/ckpt/img", WorkPath: "/ckpt/work", ParentPath: "/ckpt/parent",
	}
	got, err := checkpointOptions(&taskapi.CheckpointTaskRequest{ID: "c", Path: "/tmp/ctd-checkpoint",
		Options: anyOf(t, "containerd.runc.v1.CheckpointOptions", in)})
	if err != nil {
		t.Fatal(err)
	}
	want := oci.CheckpointOpts{
		ImagePath: "/ckpt/img", WorkPath: "/ckpt/work", ParentPath: "/ckpt/parent",
		LeaveRunning: false, TCPEstablished: true, ExtUnixSockets: true, ShellJob: true, FileLocks: true,
		EmptyNamespaces: []string{"network"}, CgroupsMode: "soft",
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("checkpoint options\n got %+v\nwant %+v", got, want)
	}
}

// Without options the image goes to the request's path and the container
// keeps running, as with the stock shim.
func TestCheckpointOptionsDefaults(t *testing.T) {
	got, err := checkpointOptions(&taskapi.CheckpointTaskRequest{ID: "c", Path: "/tmp/ctd-checkpoint"})
	if err != nil {
		t.Fatal(err)
	}
	if want := (oci.CheckpointOpts{ImagePath: "/tmp/ctd-checkpoint", LeaveRunning: true}); !reflect.DeepEqual(got, want) {
		t.Errorf("checkpoint options %+v, want %+v", got, want)
	}
}

// containerd 1.6 and 1.7's Go client (ctr task checkpoint --image-path,
// WithCheckpointImagePath, WithCheckpointTaskExit) sends, for a runtime not
// named io.containerd.runc*, containerd.linux.runc.CheckpointOptions, whose
// work_path is field 8 and image_path field 9: the reverse of
// containerd.runc.v1's. Read as the latter, the image went to containerd's
// scratch directory (and was thrown away with it) while the directory the
// user named became CRIU's work directory. Encoded here from the field
// numbers of containerd's runc.proto, not from our mirror.
func TestCheckpointOptionsLegacyClient(t *testing.T) {
	var v []byte
	v = protowire.AppendTag(v, 1, protowire.VarintType) // exit
	v = protowire.AppendVarint(v, 1)
	v = protowire.AppendTag(v, 2, protowire.VarintType) // open_tcp
	v = protowire.AppendVarint(v, 1)
	v = protowire.AppendTag(v, 7, protowire.BytesType) // cgroups_mode
	v = protowire.AppendString(v, "full")
	v = protowire.AppendTag(v, 8, protowire.BytesType) // work_path
	v = protowire.AppendString(v, "/ckpt/work")
	v = protowire.AppendTag(v, 9, protowire.BytesType) // image_path
	v = protowire.AppendString(v, "/ckpt/img")
	got, err := checkpointOptions(&taskapi.CheckpointTaskRequest{ID: "c", Path: "/tmp/ctd-checkpoint",
		Options: &anypb.Any{TypeUrl: "containerd.linux.runc.CheckpointOptions", Value: v}})
	if err != nil {
		t.Fatal(err)
	}
	want := oci.CheckpointOpts{ImagePath: "/ckpt/img", WorkPath: "/ckpt/work", TCPEstablished: true, CgroupsMode: "full"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("legacy checkpoint options\n got %+v\nwant %+v", got, want)
	}
}
