package service

import (
	"context"
	"testing"

	"github.com/containerd/errdefs"

	taskapi "github.com/example/containerd-shim-example-v2/proto/api/runtime/task/v2"
)

// A daemon that has decided to leave refuses an in-place upgrade: the
// successor would take over nothing to serve and stay until the
// abandonment timeout.
func TestLeavingDaemonIsNotHandable(t *testing.T) {
	exits := 0
	s := New(Config{RequestExit: func() { exits++ }})
	if err := s.Handable(); err != nil {
		t.Fatalf("an empty, serving daemon: %v", err)
	}
	if _, err := s.Shutdown(context.Background(), &taskapi.ShutdownRequest{}); err != nil {
		t.Fatal(err)
	}
	if exits != 1 {
		t.Fatalf("Shutdown of an empty daemon requested %d exits, want 1", exits)
	}
	if err := s.Handable(); !errdefs.IsFailedPrecondition(err) {
		t.Errorf("upgrade of a leaving daemon: %v, want FailedPrecondition", err)
	}
}
