package upgrade

import (
	"context"
	"fmt"

	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/containerd/ttrpc"

	upgradeapi "github.com/example/containerd-shim-example-v2/proto/upgrade/v1"
	"github.com/example/containerd-shim-example-v2/ttrpcserver"
)

// ServiceName is the upgrade service's name on the wire
// (proto/upgrade/v1).
const ServiceName = "example.upgrade.v1.Upgrade"

// Register serves d on srv.
func Register(srv *ttrpcserver.Server, d *Daemon) {
	srv.RegisterService(ServiceName, &ttrpc.ServiceDesc{Methods: map[string]ttrpc.Method{
		"Upgrade": func(ctx context.Context, unmarshal func(any) error) (any, error) {
			var req upgradeapi.UpgradeRequest
			if err := unmarshal(&req); err != nil {
				return nil, errgrpc.ToGRPC(fmt.Errorf("decode request: %v: %w", err, errdefs.ErrInvalidArgument))
			}
			resp, err := d.Upgrade(ctx, &req)
			if err != nil {
				return nil, errgrpc.ToGRPC(err) // the errdefs class survives the wire
			}
			return resp, nil
		},
	}})
}
