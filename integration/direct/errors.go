package direct

import (
	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
)

// ErrClass names the errdefs class of an error returned over ttrpc, as
// containerd sees it after errgrpc.ToNative ("" for no error).
func ErrClass(err error) string {
	if err == nil {
		return ""
	}
	err = errgrpc.ToNative(err)
	for _, c := range []struct {
		name string
		is   func(error) bool
	}{
		{"NotFound", errdefs.IsNotFound},
		{"AlreadyExists", errdefs.IsAlreadyExists},
		{"InvalidArgument", errdefs.IsInvalidArgument},
		{"FailedPrecondition", errdefs.IsFailedPrecondition},
		{"NotImplemented", errdefs.IsNotImplemented},
		{"Unavailable", errdefs.IsUnavailable},
		{"Canceled", errdefs.IsCanceled},
		{"DeadlineExceeded", errdefs.IsDeadlineExceeded},
		{"PermissionDenied", errdefs.IsPermissionDenied},
		{"ResourceExhausted", errdefs.IsResourceExhausted},
	} {
		if c.is(err) {
			return c.name
		}
	}
	return "Unknown"
}
