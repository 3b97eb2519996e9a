package service

import (
	"context"

	taskapi "github.com/example/containerd-shim-example-v2/proto/api/runtime/task/v2"
	"google.golang.org/protobuf/types/known/emptypb"
)

// Shutdown lets the shim exit once it holds no task and no pod sandbox;
// otherwise it is a no-op, so one container's teardown never stops a shim
// that serves others.
func (s *Service) Shutdown(ctx context.Context, r *taskapi.ShutdownRequest) (*emptypb.Empty, error) {
	if s.cfg.Sandboxes != nil && s.cfg.Sandboxes() > 0 {
		return empty, nil
	}
	if !s.closeIfIdle() {
		return empty, nil
	}
	if s.cfg.RequestExit != nil {
		s.exitOnce.Do(s.cfg.RequestExit)
	}
	return empty, nil
}

// closeIfIdle reports whether the service holds no task and none is being
// created, and if so refuses every Create from then on. The check and the
// refusal are one step under mu: the daemon leaves some time after the
// decision (it flushes its events first, up to seconds while containerd is
// slow), and a Create let in meanwhile, another container of a pod on a
// connection of its own, would create the container in the runtime only for
// the daemon to exit under it, leaving it created, mounted and unreported
// with nobody to delete it.
func (s *Service) closeIfIdle() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.containers)+len(s.pending) > 0 {
		return false
	}
	s.closing = true
	return true
}
