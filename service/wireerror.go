package service

import (
	"errors"
	"fmt"
	"os"

	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// wireError turns a handler's error into the status containerd gets
// (errdefs classes -> gRPC codes). The shim out of a resource is
// ResourceExhausted rather than Unknown, unless the error already has a
// class: a caller can tell it from a fault of its request, and retry later.
// The stock shim answers Unknown for all of them.
func wireError(err error) error {
	st := errgrpc.ToGRPC(err)
	if status.Code(st) == codes.Unknown && exhausted(err) {
		return errgrpc.ToGRPC(fmt.Errorf("%w: %w", err, errdefs.ErrResourceExhausted))
	}
	return st
}

// exhausted reports whether err is the shim running out of something that
// frees up by itself: descriptors (EMFILE, ENFILE: a pipe or a FIFO for a
// new process), room where it writes (ENOSPC, EDQUOT: a record or a process
// spec in the bundle), or processes (a fork of the runtime refused with
// EAGAIN: the pids cgroup or RLIMIT_NPROC full). EAGAIN only from a fork: it
// is also a non-blocking call's "not yet", which is no shortage.
func exhausted(err error) bool {
	for _, errno := range []unix.Errno{unix.EMFILE, unix.ENFILE, unix.ENOSPC, unix.EDQUOT} {
		if errors.Is(err, errno) {
			return true
		}
	}
	var pe *os.PathError
	return errors.As(err, &pe) && pe.Op == "fork/exec" && errors.Is(pe.Err, unix.EAGAIN)
}
