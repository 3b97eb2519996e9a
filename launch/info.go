package launch

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os/exec"
	"time"

	"github.com/example/containerd-shim-example-v2/proto/api/types"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/example/containerd-shim-example-v2/oci"
	"github.com/example/containerd-shim-example-v2/proto/codec"
	"github.com/example/containerd-shim-example-v2/service"
)

// RuntimeName is the name containerd knows this shim by.
const RuntimeName = "io.example.v2"

// featuresTypeURL is the type containerd expects for OCI runtime features.
const featuresTypeURL = "types.containerd.io/opencontainers/runtime-spec/1/features/Features"

// featuresTimeout bounds `<runtime> features`, run on every `-info`.
const featuresTimeout = 5 * time.Second

// Info runs `-info` (containerd 2.x): it prints a RuntimeInfo naming the shim,
// its version, the options it was given and the OCI runtime's features.
func Info(stdin io.Reader, stdout io.Writer) error {
	data, err := io.ReadAll(io.LimitReader(stdin, maxStartInput))
	if err != nil {
		return fmt.Errorf("read options: %w", err)
	}
	var opts *anypb.Any
	if len(data) > 0 {
		opts = &anypb.Any{}
		if err := codec.Unmarshal(data, opts); err != nil {
			return fmt.Errorf("decode options: %w", err)
		}
	}
	// The options only choose which runtime's features to report; options
	// that do not decode here will fail Create with a clear error instead.
	ro, err := service.DecodeOptions(opts)
	if err != nil {
		slog.Warn("runtime options not understood; reporting runc's features", "error", err)
	}
	info := &types.RuntimeInfo{
		Name:    RuntimeName,
		Version: &types.RuntimeVersion{Version: Version, Revision: Revision},
		Options: opts,
	}
	binary := (&oci.Runtime{Binary: ro.BinaryName}).BinaryOrDefault()
	ctx, cancel := context.WithTimeout(context.Background(), featuresTimeout)
	defer cancel()
	// Not the daemon: no reaper here, so the plain exec wait is right.
	if features, err := exec.CommandContext(ctx, binary, "features").Output(); err == nil {
		info.Features = &anypb.Any{TypeUrl: featuresTypeURL, Value: features}
	} else {
		slog.Warn("OCI runtime features unavailable", "runtime", binary, "error", err)
	}
	out, err := codec.Marshal(info)
	if err != nil {
		return fmt.Errorf("encode runtime info: %w", err)
	}
	_, err = stdout.Write(out)
	return err
}
