package service

import (
	"errors"
	"fmt"
	"os"
	"testing"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// The codes containerd gets: a class is kept; the shim out of descriptors,
// room in the bundle or processes is ResourceExhausted (it was Unknown),
// with its message; anything else without a class, a non-blocking call's
// EAGAIN included, stays Unknown.
func TestWireError(t *testing.T) {
	pipe := fmt.Errorf("exec \"x\" stdio: %w", &os.SyscallError{Syscall: "pipe2", Err: unix.EMFILE})
	for _, tc := range []struct {
		err  error
		want codes.Code
	}{
		{pipe, codes.ResourceExhausted},
		{fmt.Errorf("open fifo: %w", &os.PathError{Op: "open", Path: "/run/x", Err: unix.ENFILE}), codes.ResourceExhausted},
		{fmt.Errorf("%w: %w", pipe, errdefs.ErrFailedPrecondition), codes.FailedPrecondition},
		{fmt.Errorf("container %q: %w", "c", errdefs.ErrNotFound), codes.NotFound},
		{fmt.Errorf("write runtime record: %w", &os.PathError{Op: "write", Path: "/b/runtime.json", Err: unix.ENOSPC}), codes.ResourceExhausted},
		{fmt.Errorf("write spec: %w", unix.EDQUOT), codes.ResourceExhausted},
		{fmt.Errorf("runtime create: start /usr/sbin/runc: %w", &os.PathError{Op: "fork/exec", Path: "/usr/sbin/runc", Err: unix.EAGAIN}), codes.ResourceExhausted},
		{fmt.Errorf("read pipe: %w", &os.PathError{Op: "read", Path: "|0", Err: unix.EAGAIN}), codes.Unknown},
		{errors.New("runc: exit status 1"), codes.Unknown},
	} {
		got := wireError(tc.err)
		if status.Code(got) != tc.want {
			t.Errorf("%v: code %v, want %v", tc.err, status.Code(got), tc.want)
		}
		if s, _ := status.FromError(got); tc.want == codes.ResourceExhausted && s.Message() == "" {
			t.Errorf("%v: the message was lost", tc.err)
		}
	}
}
