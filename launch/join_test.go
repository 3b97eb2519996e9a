package launch

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/containerd/ttrpc"

	"github.com/example/containerd-shim-example-v2/internal/leavegate"
	groupapi "github.com/example/containerd-shim-example-v2/proto/group/v1"
	introspect "github.com/example/containerd-shim-example-v2/proto/introspect/v1"
	"github.com/example/containerd-shim-example-v2/service"
	"github.com/example/containerd-shim-example-v2/ttrpcserver"
)

// fakeDaemon serves the group service on a socket as a group's daemon
// would, answering Join with join (nil: the service is not served, as by a
// binary from before it), and introspection, as every binary of ours does
// (see newForeignDaemon). It records the ids it was told.
type fakeDaemon struct {
	l      *net.UnixListener
	srv    *ttrpcserver.Server
	mu     sync.Mutex
	joined []string
}

func newFakeDaemon(t *testing.T, path string, join func(id string) error) *fakeDaemon {
	t.Helper()
	return fakeDaemonOn(t, listenFake(t, path), join, true)
}

// newForeignDaemon serves a socket as another shim's daemon (the stock
// shim's): neither the group service nor introspection.
func newForeignDaemon(t *testing.T, path string) *fakeDaemon {
	t.Helper()
	return fakeDaemonOn(t, listenFake(t, path), nil, false)
}

func listenFake(t *testing.T, path string) *net.UnixListener {
	t.Helper()
	l, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// fakeDaemonOn serves l: Join with join (nil: no group service), and
// introspection when ours.
func fakeDaemonOn(t *testing.T, l *net.UnixListener, join func(id string) error, ours bool) *fakeDaemon {
	d := &fakeDaemon{l: l, srv: ttrpcserver.New(ttrpcserver.Options{})}
	if join != nil {
		d.srv.RegisterService(service.GroupService, &ttrpc.ServiceDesc{Methods: map[string]ttrpc.Method{
			"Join": func(_ context.Context, unmarshal func(any) error) (any, error) {
				var req groupapi.JoinRequest
				if err := unmarshal(&req); err != nil {
					return nil, err
				}
				d.mu.Lock()
				d.joined = append(d.joined, req.Id)
				d.mu.Unlock()
				if err := join(req.Id); err != nil {
					return nil, errgrpc.ToGRPC(err)
				}
				return &groupapi.JoinResponse{}, nil
			},
		}})
	}
	if ours {
		d.srv.RegisterService(service.IntrospectService, &ttrpc.ServiceDesc{Methods: map[string]ttrpc.Method{
			"Snapshot": func(context.Context, func(any) error) (any, error) {
				return &introspect.SnapshotResponse{}, nil
			},
		}})
	}
	go func() { _ = d.srv.Serve(context.Background(), l) }()
	t.Cleanup(d.stop)
	return d
}

// stop closes the listener, as a leaving daemon does right after deciding.
func (d *fakeDaemon) stop() { _ = d.srv.Close(); d.l.Close() }

func (d *fakeDaemon) ids() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]string(nil), d.joined...)
}

// A live daemon of the group is told the task is coming, and joined.
func TestJoinTellsTheGroupsDaemon(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s")
	d := newFakeDaemon(t, path, func(string) error { return nil })
	if _, err := listenOrJoin(path, "c2", true); !errors.Is(err, ErrDaemonRunning) {
		t.Fatalf("listenOrJoin: %v, want the running daemon joined", err)
	}
	if got := d.ids(); len(got) != 1 || got[0] != "c2" {
		t.Fatalf("the daemon was told %v, want [c2]", got)
	}
	// A CRI pod's daemon is joined without it.
	if _, err := listenOrJoin(path, "c3", false); !errors.Is(err, ErrDaemonRunning) {
		t.Fatalf("listenOrJoin of a pod's container: %v", err)
	}
	if got := d.ids(); len(got) != 1 {
		t.Fatalf("a pod's container announced itself: %v", got)
	}
}

// A daemon that has decided to leave refuses: start waits until its socket
// closes and binds it for a daemon of its own.
func TestJoinALeavingDaemonStartsAnother(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s")
	var d *fakeDaemon
	var once sync.Once
	d = newFakeDaemon(t, path, func(string) error {
		// Leaves a moment after refusing, as a daemon does.
		once.Do(func() { time.AfterFunc(50*time.Millisecond, d.stop) })
		return leavegate.ErrLeaving
	})
	l, err := listenOrJoin(path, "c2", true)
	if err != nil {
		t.Fatalf("listenOrJoin: %v, want the socket bound afresh", err)
	}
	l.Close()
	if len(d.ids()) == 0 {
		t.Fatal("the leaving daemon was not asked")
	}
}

// A daemon of a binary from before the group service is joined as before.
func TestJoinADaemonWithoutTheGroupService(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s")
	newFakeDaemon(t, path, nil)
	if _, err := listenOrJoin(path, "c2", true); !errors.Is(err, ErrDaemonRunning) {
		t.Fatalf("listenOrJoin: %v, want the running daemon joined", err)
	}
}

// A daemon that goes on refusing and serving is given up on, with the
// reason.
func TestJoinGivesUpOnADaemonThatNeverLeaves(t *testing.T) {
	defer func(w time.Duration) { leavingWait = w }(leavingWait)
	leavingWait = 300 * time.Millisecond
	path := filepath.Join(t.TempDir(), "s")
	newFakeDaemon(t, path, func(string) error { return leavegate.ErrLeaving })
	start := time.Now()
	_, err := listenOrJoin(path, "c2", true)
	if !errdefs.IsFailedPrecondition(err) {
		t.Fatalf("listenOrJoin: %v, want the leaving daemon's refusal", err)
	}
	if waited := time.Since(start); waited < leavingWait {
		t.Fatalf("gave up after %v, before %v", waited, leavingWait)
	}
}

// A task whose group hashes to another shim's daemon (a stock shim's group
// of the same name) gets a daemon of ours on the group's marked socket, and
// the group's next task joins that one, not the foreign daemon.
func TestGroupBesideAForeignDaemonGetsItsOwn(t *testing.T) {
	dir := shortTempDir(t)
	b := bundleInfo{group: "web", announce: true, hasSpec: true}
	plain, err := SocketPath(dir, "/run/containerd/containerd.sock", "default", "web")
	if err != nil {
		t.Fatal(err)
	}
	stock := newForeignDaemon(t, plain)

	path, l, err := daemonSocket(dir, "/run/containerd/containerd.sock", "default", "c1", b)
	if err != nil {
		t.Fatalf("daemonSocket beside a foreign daemon: %v, want a socket bound", err)
	}
	if path == plain {
		t.Fatalf("bound %s, the foreign daemon's socket", path)
	}
	ours := fakeDaemonOn(t, l, func(string) error { return nil }, true)

	again, _, err := daemonSocket(dir, "/run/containerd/containerd.sock", "default", "c2", b)
	if !errors.Is(err, ErrDaemonRunning) || again != path {
		t.Fatalf("the group's next task: %s, %v; want the daemon at %s joined", again, err, path)
	}
	if got := ours.ids(); len(got) != 1 || got[0] != "c2" {
		t.Fatalf("our daemon was told %v, want [c2]", got)
	}

	// Once the foreign daemon has gone, the group stays where its daemon is.
	stock.stop()
	again, _, err = daemonSocket(dir, "/run/containerd/containerd.sock", "default", "c3", b)
	if !errors.Is(err, ErrDaemonRunning) || again != path {
		t.Fatalf("after the foreign daemon left: %s, %v; want the daemon at %s joined", again, err, path)
	}
}

// A CRI pod's container does not announce itself, so nothing tells a
// foreign daemon apart on its socket: it stays on the plain hash.
func TestPodContainerStaysOnThePlainSocket(t *testing.T) {
	dir := shortTempDir(t)
	plain, err := SocketPath(dir, "/run/containerd/containerd.sock", "k8s.io", "pod")
	if err != nil {
		t.Fatal(err)
	}
	path, l, err := daemonSocket(dir, "/run/containerd/containerd.sock", "k8s.io", "c1", bundleInfo{group: "pod", hasSpec: true})
	if err != nil {
		t.Fatal(err)
	}
	l.Close()
	if path != plain {
		t.Fatalf("a pod's container bound %s, want %s", path, plain)
	}
}

// shortTempDir is a temporary directory short enough for a socket named by
// a hash (t.TempDir's names run past sun_path's 108 bytes).
func shortTempDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "j")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}
