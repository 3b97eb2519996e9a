package service

import (
	"github.com/example/containerd-shim-example-v2/oci"
	taskapi "github.com/example/containerd-shim-example-v2/proto/api/runtime/task/v2"
	runcopts "github.com/example/containerd-shim-example-v2/proto/api/types/runc/options"
	"github.com/example/containerd-shim-example-v2/proto/codec"
	exampleopts "github.com/example/containerd-shim-example-v2/proto/options/v1"
)

// checkpointOptions reads a Checkpoint request into the runtime's options.
// The image goes where the options' ImagePath says, else to the request's
// path (containerd 2.x sets both alike; 1.6 and 1.7 name a directory of
// their own in the path for runtimes they do not know as runc).
func checkpointOptions(r *taskapi.CheckpointTaskRequest) (oci.CheckpointOpts, error) {
	var o runcopts.CheckpointOptions
	if r.Options != nil && len(r.Options.GetValue()) > 0 {
		var err error
		if typeName(r.Options.GetTypeUrl()) == typeLegacyCheckpoint {
			o, err = decodeLegacyCheckpoint(r.Options.GetValue())
		} else {
			err = codec.Unmarshal(r.Options.GetValue(), &o)
		}
		if err != nil {
			return oci.CheckpointOpts{}, invalidArgument("decode checkpoint options: %v", err)
		}
	}
	image := o.ImagePath
	if image == "" {
		image = r.Path
	}
	if image != "" { // none: the container says so (InvalidArgument)
		if err := checkImageDir("checkpoint image path", image, false); err != nil {
			return oci.CheckpointOpts{}, err
		}
	}
	if o.WorkPath != "" {
		if err := checkImageDir("checkpoint work path", o.WorkPath, false); err != nil {
			return oci.CheckpointOpts{}, err
		}
	}
	return oci.CheckpointOpts{
		ImagePath:       image,
		WorkPath:        o.WorkPath,
		ParentPath:      o.ParentPath,
		LeaveRunning:    !o.Exit,
		TCPEstablished:  o.OpenTcp,
		ExtUnixSockets:  o.ExternalUnixSockets,
		ShellJob:        o.Terminal,
		FileLocks:       o.FileLocks,
		EmptyNamespaces: o.EmptyNamespaces,
		CgroupsMode:     o.CgroupsMode,
	}, nil
}

// decodeLegacyCheckpoint reads the checkpoint options the 1.6 and 1.7 Go
// clients send for runtimes they do not know as runc. Same fields as
// containerd.runc.v1's, but image and work path numbered the other way
// round: decoded as those, the image went to the work directory.
func decodeLegacyCheckpoint(v []byte) (runcopts.CheckpointOptions, error) {
	var m exampleopts.LegacyCheckpointOptions
	if err := codec.Unmarshal(v, &m); err != nil {
		return runcopts.CheckpointOptions{}, err
	}
	return runcopts.CheckpointOptions{Exit: m.Exit, OpenTcp: m.OpenTcp, ExternalUnixSockets: m.ExternalUnixSockets,
		Terminal: m.Terminal, FileLocks: m.FileLocks, EmptyNamespaces: m.EmptyNamespaces, CgroupsMode: m.CgroupsMode,
		ImagePath: m.ImagePath, WorkPath: m.WorkPath}, nil
}
