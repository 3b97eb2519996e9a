package launch

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"google.golang.org/grpc/status"

	"github.com/example/containerd-shim-example-v2/internal/ttrpcclient"
	groupapi "github.com/example/containerd-shim-example-v2/proto/group/v1"
	"github.com/example/containerd-shim-example-v2/service"
)

const (
	// joinTimeout bounds the Join call: a live daemon answers at once, and
	// one that does not is joined as before the group service existed.
	joinTimeout = 2 * time.Second
	// leavingPoll spaces the looks at a leaving daemon's socket.
	leavingPoll = 5 * time.Millisecond
)

// leavingWait bounds the wait for a daemon that refused the join: it has
// decided to leave and closes its socket right after deciding. A variable
// for tests.
var leavingWait = 10 * time.Second

// errNoConnection: Join could not reach the daemon; its socket is closing.
var errNoConnection = errors.New("no connection to the group's daemon")

// listenOrJoin binds the group's socket for a new daemon, or returns
// ErrDaemonRunning when a live daemon serves it and will take the task.
//
// With announce (see bundleInfo), the daemon is first told that task id's
// Create is coming (service.Join): what else it serves could be deleted
// before containerd sends it, and the daemon, finding itself empty at that
// Shutdown, would leave and refuse the Create. A daemon that has decided
// to leave already refuses the join; its socket is then waited out and
// bound afresh for a daemon of this task's own.
func listenOrJoin(path, id string, announce bool) (*net.UnixListener, error) {
	deadline := time.Now().Add(leavingWait)
	for {
		l, err := Listen(path)
		if !errors.Is(err, ErrDaemonRunning) || !announce {
			return l, err
		}
		err = join(path, id)
		switch {
		case err == nil:
			return nil, ErrDaemonRunning
		case !errdefs.IsFailedPrecondition(err) && !errors.Is(err, errNoConnection):
			// A daemon of a binary from before the group service
			// (NotImplemented), or one that did not answer in time:
			// joined as before.
			return nil, ErrDaemonRunning
		case time.Now().After(deadline):
			return nil, fmt.Errorf("the group's daemon at %s is leaving, and still there after %v: %w", path, leavingWait, err)
		}
		time.Sleep(leavingPoll)
	}
}

// join tells the daemon at socket that task id's Create is coming.
func join(socket, id string) error {
	ctx, cancel := context.WithTimeout(context.Background(), joinTimeout)
	defer cancel()
	c, err := ttrpcclient.Dial(ctx, socket)
	if err != nil {
		return fmt.Errorf("%w: %w", errNoConnection, err)
	}
	defer c.Close()
	var resp groupapi.JoinResponse
	err = c.Call(ctx, service.GroupService, "Join", &groupapi.JoinRequest{Id: id}, &resp)
	if _, answered := status.FromError(err); answered || errors.Is(err, ttrpcclient.ErrAnswerPending) {
		return errgrpc.ToNative(err) // nil for an OK answer
	}
	// The daemon hung up on the call: it is leaving, or gone.
	return fmt.Errorf("%w: %w", errNoConnection, err)
}
