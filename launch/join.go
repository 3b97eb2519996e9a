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

// errForeignDaemon: the daemon on the socket is another shim's. It serves
// neither the group service nor introspection, which every binary of ours
// serves (introspection since before the group service).
var errForeignDaemon = errors.New("another shim's daemon serves the socket")

// foreignDomain marks the hash of a group whose own socket another shim's
// daemon holds (see daemonSocket).
const foreignDomain = "io.example.v2.elsewhere="

// daemonSocket binds the socket of the task's group for a new daemon, or
// finds the live daemon of ours that will take the task (ErrDaemonRunning),
// and returns the socket's path either way.
//
// The path is a hash of the group (SocketPath), as the stock shim computes
// it for its own groups and task ids. So a task of ours whose id or group
// has the name of a stock shim's group, or of a stock task's id used as our
// group, hashes to the stock daemon's socket: joining there would have that
// daemon run our container under its own runtime. When the daemon found
// proves foreign (listenOrJoin), the group is hashed once more with a mark,
// and later tasks of the group look at that socket first, so the group
// keeps its one daemon there after the foreign one has gone. Tasks that do
// not announce themselves (CRI pods, whose runtime is one handler) never
// meet a foreign daemon and stay on the plain hash.
func daemonSocket(dir, address, namespace, id string, b bundleInfo) (string, *net.UnixListener, error) {
	path, err := SocketPath(dir, address, namespace, b.group)
	if err != nil {
		return "", nil, err
	}
	if !b.announce {
		l, err := listenOrJoin(path, id, false)
		return path, l, err
	}
	elsewhere, err := SocketPath(dir, address, namespace, foreignDomain+b.group)
	if err != nil {
		return "", nil, err
	}
	// Nearly always nothing is there, and the dial fails at once (ENOENT).
	if socketDead(elsewhere) {
		l, err := listenOrJoin(path, id, true)
		if !errors.Is(err, errForeignDaemon) {
			return path, l, err
		}
	}
	l, err := listenOrJoin(elsewhere, id, true)
	if errors.Is(err, errForeignDaemon) {
		return "", nil, fmt.Errorf("start: sockets %s and %s both served by another shim's daemon: %w", path, elsewhere, err)
	}
	return elsewhere, l, err
}

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
		case errdefs.IsNotImplemented(err):
			// A binary of ours from before the group service, joined as
			// before, or another shim's daemon.
			if foreign(path) {
				return nil, fmt.Errorf("%s: %w", path, errForeignDaemon)
			}
			return nil, ErrDaemonRunning
		case !errdefs.IsFailedPrecondition(err) && !errors.Is(err, errNoConnection):
			// A daemon that did not answer in time: joined as before.
			return nil, ErrDaemonRunning
		case time.Now().After(deadline):
			return nil, fmt.Errorf("the group's daemon at %s is leaving, and still there after %v: %w", path, leavingWait, err)
		}
		time.Sleep(leavingPoll)
	}
}

// foreign reports whether the daemon at socket is not of this shim: it
// does not serve introspection either. Asked only of a daemon without the
// group service; one that does not answer in time counts as ours, as an
// unanswered Join does.
func foreign(socket string) bool {
	ctx, cancel := context.WithTimeout(context.Background(), joinTimeout)
	defer cancel()
	_, err := service.Snapshot(ctx, socket)
	return errdefs.IsNotImplemented(err)
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
