package service

import (
	"reflect"
	"testing"

	runcopts "github.com/containerd/containerd/api/types/runc/options"

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
