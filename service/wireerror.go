package service

import (
	"errors"
	"fmt"

	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// wireError turns a handler's error into the status containerd gets
// (errdefs classes -> gRPC codes). The shim running out of descriptors
// (EMFILE, ENFILE: a pipe or a FIFO it could not open for a new process)
// is ResourceExhausted rather than Unknown, unless the error already has a
// class: a caller can tell it from a fault of its request, and retry later.
func wireError(err error) error {
	st := errgrpc.ToGRPC(err)
	if status.Code(st) == codes.Unknown && (errors.Is(err, unix.EMFILE) || errors.Is(err, unix.ENFILE)) {
		return errgrpc.ToGRPC(fmt.Errorf("%w: %w", err, errdefs.ErrResourceExhausted))
	}
	return st
}
