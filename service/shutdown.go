package service

import (
	"context"

	taskapi "github.com/example/containerd-shim-example-v2/proto/api/runtime/task/v2"
	"google.golang.org/protobuf/types/known/emptypb"
)

// Shutdown lets the shim exit once it holds no task and no pod sandbox;
// otherwise it is a no-op, so one container's teardown never stops a shim
// that serves others. The check and the decision to leave are one step
// under the daemon's leave gate, which refuses every Create and
// CreateSandbox from then on: the daemon leaves some time after the
// decision (it flushes its events first, up to seconds while containerd is
// slow), and a task or pod let in meanwhile, on a connection of its own,
// would be created only for the daemon to exit under it, left created,
// mounted and unreported with nobody to delete it.
func (s *Service) Shutdown(ctx context.Context, r *taskapi.ShutdownRequest) (*emptypb.Empty, error) {
	if !s.cfg.Gate.CloseIfEmpty(s.HoldsNothing) {
		return empty, nil
	}
	if s.cfg.RequestExit != nil {
		s.exitOnce.Do(s.cfg.RequestExit)
	}
	return empty, nil
}

// HoldsNothing reports whether the service holds no task, none is being
// created, and the daemon serves no pod sandbox.
func (s *Service) HoldsNothing() bool {
	return s.Tasks() == 0 && (s.cfg.Sandboxes == nil || s.cfg.Sandboxes() == 0)
}
