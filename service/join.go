package service

import (
	"context"
	"fmt"
	"time"

	"github.com/containerd/ttrpc"

	groupapi "github.com/example/containerd-shim-example-v2/proto/group/v1"
	"github.com/example/containerd-shim-example-v2/ttrpcserver"
)

// GroupService is the group service's name on the wire (proto/group/v1):
// `start` tells a group's daemon that a task's Create is coming.
const GroupService = "example.group.v1.Group"

// joinTTL is how long a joining task's Create is waited for. containerd
// sends it right after `start` answers; a minute covers a loaded node, and
// a Create that never comes (containerd died in between) only keeps an
// otherwise empty daemon that long, before its abandonment watch.
const joinTTL = time.Minute

// RegisterGroup serves the group service on srv.
func RegisterGroup(srv *ttrpcserver.Server, s *Service) {
	srv.RegisterService(GroupService, &ttrpc.ServiceDesc{Methods: map[string]ttrpc.Method{
		"Join": method(s.Join),
	}})
}

// Join keeps the daemon from leaving until task r.Id's Create arrives (or
// joinTTL passes); FailedPrecondition once it has decided to leave.
func (s *Service) Join(_ context.Context, r *groupapi.JoinRequest) (*groupapi.JoinResponse, error) {
	if err := validateID("container id", r.GetId()); err != nil {
		return nil, err
	}
	if err := s.cfg.Gate.Expect(r.GetId(), joinTTL); err != nil {
		return nil, fmt.Errorf("join %q: %w", r.GetId(), err)
	}
	return &groupapi.JoinResponse{}, nil
}
