package launch

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"sync"
	"time"

	"github.com/containerd/ttrpc"
	"golang.org/x/sys/unix"

	"github.com/example/containerd-shim-example-v2/cgroup"
	"github.com/example/containerd-shim-example-v2/events"
	"github.com/example/containerd-shim-example-v2/handover"
	"github.com/example/containerd-shim-example-v2/internal/daemonlog"
	"github.com/example/containerd-shim-example-v2/internal/leavegate"
	introspect "github.com/example/containerd-shim-example-v2/proto/introspect/v1"
	"github.com/example/containerd-shim-example-v2/reaper"
	"github.com/example/containerd-shim-example-v2/sandbox"
	"github.com/example/containerd-shim-example-v2/service"
	"github.com/example/containerd-shim-example-v2/ttrpcserver"
	"github.com/example/containerd-shim-example-v2/upgrade"
)

// hangupTimeout bounds how long a daemon whose last pod was shut down waits
// for containerd to close its connections before leaving anyway. containerd
// closes them right after ShutdownSandbox answers.
const hangupTimeout = 5 * time.Second

// eventFlushTimeout bounds how long an exiting daemon waits for its last
// events (the final /tasks/delete) to reach containerd.
const eventFlushTimeout = 5 * time.Second

// answerDrainTimeout bounds how long an exiting daemon waits for the calls
// still running to write their answers. The Shutdown that made it leave
// has done its work by then and only writes; a call stuck in a runtime
// command (after a SIGTERM) is not worth holding the exit for longer.
const answerDrainTimeout = time.Second

// hangupAfterShutdown bounds how long a daemon that a Shutdown call made
// leave waits for its clients to hang up (containerd does at once; a tool
// that keeps its connection open pays this delay).
const hangupAfterShutdown = time.Second

// listenerFD is where `start` hands the daemon its bound socket.
const listenerFD = 3

// RunDaemon is the long-lived shim: it serves the task API until a Shutdown
// finds no task left (or SIGTERM/SIGINT), then leaves cleanly.
func RunDaemon(f Flags) error {
	if err := checkNamespace(f.Namespace); err != nil {
		return err
	}
	// Looked at before the daemon opens anything that could take the
	// number: a tool that runs the daemon itself may pass no socket on fd
	// 3 and name one with -socket instead.
	inherited := listenerInherited()
	tuneMemory()
	reserveThreads()
	// Container processes are grandchildren (runc forks them and exits);
	// as a subreaper the daemon inherits them and can wait for their exits.
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("become child subreaper: %w", err)
	}
	logSink := setupLog(f.Debug)
	if len(f.Ignored) > 0 {
		slog.Info("ignoring unknown flags", "flags", f.Ignored)
	}
	// A client that went away must not kill the shim through SIGPIPE. Caught,
	// not ignored: an ignored signal stays ignored across execve, so every
	// runtime, hook and binary:// logger, and the containers of a runtime
	// that does not reset it, would start with SIGPIPE ignored (a writer into
	// a closed pipe would get EPIPE, not the signal that ends it elsewhere).
	// Nobody reads the channel; a signal that finds it full is dropped.
	signal.Notify(make(chan os.Signal, 1), unix.SIGPIPE)
	// The same for the signals whose ignoring Go keeps when the daemon
	// inherits it (SIGHUP under nohup or a manager that ignores it; the job
	// control stops, which Go never handles unless asked): caught, they
	// are back at their defaults in what the daemon starts. An ignored
	// SIGHUP reached the containers whenever the runtime had not caught it
	// itself before forking them, which runc 1.1 does first thing and runc
	// 1.5 does on a goroutine of its own, racing with the fork: a process
	// whose terminal the shim hung up then read end of file and lived on.
	// The daemon has no terminal; none of these is meant for it.
	signal.Notify(make(chan os.Signal, 1), inheritedIgnores...)
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, unix.SIGTERM, unix.SIGINT)
	dump := make(chan os.Signal, 1)
	signal.Notify(dump, unix.SIGUSR1)
	go dumpStacksOn(dump)

	// The binary an in-place upgrade executes by default: the path this one
	// was started from, read now, before an install replaces the file.
	self, _ := os.Executable()
	// Executed by the previous binary of this daemon (an in-place upgrade):
	// take over what it handed over.
	var taken *upgrade.Taken
	if fdText, ok := os.LookupEnv(handover.EnvFD); ok {
		_ = os.Unsetenv(handover.EnvFD) // not for the runtime's children
		t, err := upgrade.Take(fdText)
		if err != nil {
			return fmt.Errorf("take over from the previous binary: %w", err)
		}
		taken, self = t, t.Binary()
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r := reaper.New()
	// containerd starts a shim to create something in it: give the runtime's
	// cgroup migration a head start while containerd connects and asks
	// (cgroup.MigrationWarmer). Not when `start` moves this daemon into a
	// ShimCgroup: that move is a migration of its own, and a thread moved
	// meanwhile could end up outside the new cgroup.
	warmer := &cgroup.MigrationWarmer{}
	if f.WarmCgroups {
		warmer.KickOwnThread(cgroup.DefaultRoot)
	}
	go primeProcessHandles()
	containerd := os.Getenv("TTRPC_ADDRESS") // where events go
	queue := events.NewQueue(f.Namespace, events.NewTTRPCForwarder(containerd))

	exitRequested := make(chan struct{})
	requestExit := sync.OnceFunc(func() { close(exitRequested) })
	var pods *sandbox.Service // containerd 2.x's Sandbox API (sandboxer = "shim")
	var up *upgrade.Daemon    // in-place upgrades (issue 14)
	// Every way of leaving decides under one gate, which Create and
	// CreateSandbox record under: nothing is created after the decision.
	gate := new(leavegate.Gate)
	svc := service.New(service.Config{
		Namespace:   f.Namespace,
		Reaper:      r,
		Events:      queue,
		RequestExit: requestExit,
		Gate:        gate,
		SocketDir:   socketDir(f.Socket),
		Address:     daemonAddress(f.Socket),
		Version:     Version,
		Revision:    Revision,
		Started:     time.Now(),
		Sandboxes:   func() int { return pods.Count() },
		SandboxPid:  func(id string) (int, bool) { return pods.HolderPid(id) },
		Upgrade:     func() *introspect.Upgrade { return up.Record() },
		Warmer:      warmer,
		// While containerd is down nobody reads CRI's FIFOs, and once it
		// is up again it does: output waits rather than being discarded.
		ContainerdStatus: func() (bool, time.Time) { return events.Probe(containerd) },
		TaskGone:         logSink.TaskGone,
	})

	// Every client connection, pausable for an upgrade, and counted: a
	// daemon that served a pod leaves after ShutdownSandbox only once
	// containerd has hung up, since leaving at once could cut the answer to
	// ShutdownSandbox itself (the server writes it after the handler
	// returns, from the call's own goroutine).
	live := handover.NewConns()
	pods = sandbox.New(sandbox.Config{
		Reaper:    r,
		Warmer:    warmer,
		Tasks:     svc.Tasks,
		Namespace: f.Namespace,
		Gate:      gate,
		// The last pod is gone: leave once containerd has hung up.
		Idle: func() {
			go func() {
				live.WaitNone(hangupTimeout)
				if gate.CloseIfEmpty(svc.HoldsNothing) {
					requestExit()
				}
			}()
		},
	})
	// The daemon's log may move to any bundle it serves (daemonlog).
	logSink.Follow(func() []string { return append(svc.Bundles(), pods.Bundles()...) })

	if taken != nil {
		// Before the reaper runs: exits that happened during the switch
		// wait as zombies and must find their processes' claims.
		if err := taken.Import(queue, svc, pods); err != nil {
			return fmt.Errorf("take over from the previous binary: %w", err)
		}
	}
	go r.Run(ctx)
	go queue.Run()
	trim := newTrimmer(r)
	var last lastRequest
	last.Touch()
	srv := ttrpcserver.New(ttrpcserver.Options{
		Handshaker: live.Handshaker(ttrpc.UnixSocketRequireSameUser()),
		OnRequest: func(fullMethod string) {
			trim.Request(fullMethod)
			last.Touch() // a poll too: containerd is still there
		},
	})
	service.Register(srv, svc)
	service.RegisterIntrospect(srv, svc)
	service.RegisterGroup(srv, svc)
	service.RegisterSandbox(srv, pods)

	l, err := daemonListener(taken, inherited, f.Socket)
	if err != nil {
		return err
	}
	own := ownSocketFile(f.Socket)
	up = upgrade.New(upgrade.Parts{Listener: l, Conns: live, Reaper: r, Events: queue, Service: svc,
		Pods: pods, HandlersIdle: srv.HandlersIdle}, handover.Build{Version: Version, Revision: Revision}, self, os.Args)
	upgrade.Register(srv, up)
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ctx, l) }()
	if taken != nil {
		up.Took(taken)
		slog.Info("upgraded in place", "pid", os.Getpid(), "from", up.Record().FromVersion, "to", Version, "pause_us", up.Record().PauseUs)
	}
	stopTrim := make(chan struct{}) // ends the trimmer and the abandonment watch
	defer close(stopTrim)
	go trim.Run(stopTrim, quietPeriod, trimInterval)
	abandonAfter := abandonTimeoutFromEnv()
	abandoned := watchAbandoned(stopTrim, func() int { return svc.Tasks() + pods.Count() }, &last, abandonAfter,
		func() bool { return gate.CloseIfEmpty(svc.HoldsNothing) })
	slog.Debug("shim daemon serving", "socket", f.Socket, "pid", os.Getpid())

	asked := false // a Shutdown call (or the last pod's end) asked for the exit
	select {
	case <-exitRequested:
		asked = true
		slog.Debug("last task gone; shutting down")
	case <-abandoned:
		slog.Warn("no task and no request for a long time: containerd abandoned this shim; leaving", "after", abandonAfter)
	case sig := <-stop:
		slog.Info("signal received; shutting down", "signal", sig, "tasks", svc.Tasks())
	case err := <-serveErr:
		slog.Error("ttrpc server stopped", "error", err)
	}
	// Stop accepting first, so no new task arrives while we leave.
	l.Close()
	own.remove()
	if !queue.Flush(eventFlushTimeout) {
		slog.Warn("events not delivered before exit")
	}
	queue.Close()
	if asked {
		// containerd hangs up once Shutdown has answered. Closing first
		// races ttrpc's client, which may report a connection that closes
		// just after an answer as "ttrpc: closed" instead of the answer.
		live.WaitNone(hangupAfterShutdown)
	}
	// The answers of calls still running go out before their connections
	// close: the Shutdown that asked for this exit is one of them.
	drain, cancel := context.WithTimeout(context.Background(), answerDrainTimeout)
	_ = srv.Shutdown(drain)
	cancel()
	return nil
}

// daemonListener is the socket the daemon serves: the one a previous binary
// of this daemon handed over (with its open connections), or the one `start`
// bound and passed on listenerFD (inherited), or else the -socket path, bound
// here, as the stock shim library's daemon serves it when run without one.
func daemonListener(taken *upgrade.Taken, inherited bool, socket string) (*handover.Listener, error) {
	if taken != nil {
		return taken.Listener()
	}
	if !inherited {
		// Nothing of ours on fd 3: the number may be one of the daemon's
		// own files by now (the Go runtime's poller), not to be touched.
		if socket == "" {
			return nil, fmt.Errorf("no listening socket on fd %d and no -socket path to serve", listenerFD)
		}
		ul, err := Listen(socket)
		if err != nil {
			return nil, fmt.Errorf("-socket %s: %w", socket, err)
		}
		return handover.NewListener(ul, nil), nil
	}
	fd3 := os.NewFile(listenerFD, "shim socket")
	l, err := net.FileListener(fd3)
	// FileListener works on a duplicate (close-on-exec); the inherited
	// descriptor, without that flag, would reach every runtime and hook
	// process, and keep the socket listening after the daemon closed it.
	fd3.Close()
	if err != nil {
		return nil, fmt.Errorf("inherited listener on fd %d: %w", listenerFD, err)
	}
	ul, ok := l.(*net.UnixListener)
	if !ok {
		l.Close()
		return nil, fmt.Errorf("inherited listener on fd %d is not a unix socket", listenerFD)
	}
	return handover.NewListener(ul, nil), nil
}

// listenerInherited says whether listenerFD is a listening socket.
func listenerInherited() bool {
	v, err := unix.GetsockoptInt(listenerFD, unix.SOL_SOCKET, unix.SO_ACCEPTCONN)
	return err == nil && v == 1
}

// dumpStacksOn writes every goroutine's stack to the log on each signal
// (SIGUSR1, as containerd's own shims do): the way to see where a live shim
// is stuck without stopping it.
func dumpStacksOn(sigs <-chan os.Signal) {
	for range sigs {
		// Allocated per dump: an idle shim should not carry 1 MiB for it.
		buf := make([]byte, 1<<20)
		n := runtime.Stack(buf, true)
		slog.Info("goroutine dump (SIGUSR1)\n" + string(buf[:n]))
	}
}

// daemonAddress is the ttrpc address of the socket the daemon serves ("" when
// it was started without one, as unit tests do).
func daemonAddress(socket string) string {
	if socket == "" {
		return ""
	}
	return SocketAddress(socket)
}

// socketDir is the directory of the daemon's own socket (where console
// sockets go too), or the default one.
func socketDir(socket string) string {
	if socket == "" {
		return DefaultSocketDir
	}
	return filepath.Dir(socket)
}

// setupLog sends the daemon's log and any panic to the bundle's `log` FIFO,
// which containerd copies into its own log. The FIFO is opened non-blocking:
// while containerd is down nobody drains it, and a shim must drop log lines
// rather than stall on them. The Sink returned moves the log to another
// bundle's FIFO once containerd stops reading this one (daemonlog). A
// `log` that is a regular file (a tool driving the shim itself may make one)
// is appended to: an in-place upgrade's successor opens it again.
func setupLog(debug bool) *daemonlog.Sink {
	level := slog.LevelInfo
	if debug {
		level = slog.LevelDebug
	}
	if fd, err := unix.Open("log", unix.O_WRONLY|unix.O_APPEND|unix.O_NONBLOCK|unix.O_CLOEXEC, 0); err == nil {
		_ = unix.Dup3(fd, 2, 0)
		unix.Close(fd)
	}
	sink := daemonlog.New()
	slog.SetDefault(slog.New(slog.NewTextHandler(sink, &slog.HandlerOptions{Level: level})))
	return sink
}

// inheritedIgnores are the signals the daemon catches (and drops) so that
// an ignoring it inherited does not pass on to the runtimes, hooks, loggers
// and containers it starts (SIGINT and SIGPIPE are caught for reasons of
// their own).
var inheritedIgnores = []os.Signal{unix.SIGHUP, unix.SIGTSTP, unix.SIGTTIN, unix.SIGTTOU}

// primeProcessHandles has os/exec's one-time check for pidfd support (it
// forks and reaps a throwaway child) run in the background while the daemon
// waits for containerd, instead of inside the first runtime call, which is on
// the path of containerd's first Create. Finding its own process is enough to
// set the check off.
func primeProcessHandles() {
	if p, err := os.FindProcess(os.Getpid()); err == nil {
		_ = p.Release()
	}
}
