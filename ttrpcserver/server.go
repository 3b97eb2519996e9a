package ttrpcserver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/containerd/ttrpc"

	"github.com/example/containerd-shim-example-v2/internal/condwait"
)

// Options configure a Server.
type Options struct {
	// Handshaker checks (and may wrap) every accepted connection before
	// it is served; nil accepts every connection as it is.
	Handshaker ttrpc.Handshaker
	// OnRequest, when set, is called before each call is handled, with its
	// full method name ("/service/method"), from the call's goroutine.
	OnRequest func(fullMethod string)
	// GoroutinePerConn serves every connection with a goroutine of its
	// own, as before the watcher (see watcher): for comparisons and tests.
	GoroutinePerConn bool
}

// Server serves registered ttrpc services on the listeners given to Serve.
//
// Locking: mu guards services (written only before Serve, but guarded so
// that a late registration is not a data race), listeners, conns, closed,
// calls and drained, and watch and watchTried while the first Serve sets
// them (watch is read without mu by the connections, which come later). A
// connection's own state belongs to its reader (see conn).
type Server struct {
	opts Options

	mu         sync.Mutex
	watch      *watcher                         // nil: a goroutine per connection
	watchTried bool                             // the first Serve made watch, or failed to
	services   map[string]map[string]registered // service -> method
	listeners  map[net.Listener]struct{}
	conns      map[*conn]struct{}
	closed     bool

	// calls counts the calls whose answer is not written yet: from their
	// dispatch to their answer, but for a call answered Later only while
	// its handler runs and while its answer is written (a Wait parked for
	// a process that never exits must not hold up Shutdown). drained, set
	// by a Shutdown waiting for them, is closed when calls drops to zero.
	calls   int
	drained chan struct{}
	// handlers counts the calls whose handler runs (HandlersIdle);
	// handlersIdle (on mu) is broadcast when it drops to zero.
	handlers     int
	handlersIdle *sync.Cond
}

// New returns a server with no services.
func New(opts Options) *Server {
	s := &Server{
		opts:      opts,
		services:  make(map[string]map[string]registered),
		listeners: make(map[net.Listener]struct{}),
		conns:     make(map[*conn]struct{}),
	}
	s.handlersIdle = sync.NewCond(&s.mu)
	return s
}

// RegisterService serves desc's unary methods under name. Stream handlers in
// desc are ignored (see the package comment). Registering a name twice is a
// programming error and panics, as with ttrpc's server.
func (s *Server) RegisterService(name string, desc *ttrpc.ServiceDesc) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, dup := s.services[name]; dup {
		panic(fmt.Sprintf("ttrpcserver: service %q registered twice", name))
	}
	methods := make(map[string]registered, len(desc.Methods))
	for m, h := range desc.Methods {
		methods[m] = registered{method: h, fullName: "/" + name + "/" + m}
	}
	s.services[name] = methods
}

// registered is a unary method and its full name, built once so that a call
// allocates nothing to find its handler.
type registered struct {
	method   ttrpc.Method
	fullName string
}

// method finds a registered unary method by the request's raw names (map
// lookups by string(b) do not allocate).
func (s *Server) method(service, name []byte) (registered, error) {
	s.mu.Lock()
	methods, ok := s.services[string(service)]
	s.mu.Unlock()
	if !ok {
		return registered{}, unimplemented("service %s", service)
	}
	m, ok := methods[string(name)]
	if !ok {
		return registered{}, unimplemented("method %s", name)
	}
	return m, nil
}

// ErrServerClosed is what Serve returns once Close was called.
var ErrServerClosed = errors.New("ttrpcserver: server closed")

// Serve accepts connections on l and serves each in its own goroutine until
// l fails or the server is closed. Temporary accept errors are retried with
// a growing pause, as net/http does. Called after Close, it closes l: Close
// could not, and an open listener would take connections nobody serves.
func (s *Server) Serve(ctx context.Context, l net.Listener) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		_ = l.Close()
		return ErrServerClosed
	}
	s.listeners[l] = struct{}{}
	if !s.watchTried && !s.opts.GoroutinePerConn {
		// Once: the connections read watch without mu, which is safe only
		// if it never changes after the first Serve.
		s.watchTried = true
		if w, err := newWatcher(); err == nil {
			s.watch = w
			go w.run()
		} else {
			slog.Warn("ttrpc: no connection watcher; a goroutine per connection", "error", err)
		}
	}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, l)
		s.mu.Unlock()
	}()

	var backoff time.Duration
	for {
		nc, err := l.Accept()
		if err != nil {
			if s.isClosed() {
				return ErrServerClosed
			}
			var te interface{ Temporary() bool }
			if errors.As(err, &te) && te.Temporary() {
				backoff = min(max(2*backoff, time.Millisecond), time.Second)
				slog.Warn("ttrpc accept failed; retrying", "error", err, "after", backoff)
				time.Sleep(backoff)
				continue
			}
			return fmt.Errorf("accept: %w", err)
		}
		backoff = 0
		if h := s.opts.Handshaker; h != nil {
			approved, _, err := h.Handshake(ctx, nc)
			if err != nil {
				slog.Warn("ttrpc connection refused by the handshake", "error", err)
				nc.Close()
				continue
			}
			nc = approved
		}
		c := newConn(ctx, s, nc)
		if !s.track(c) {
			c.end()
			return ErrServerClosed
		}
		c.start()
	}
}

// track registers a live connection; false once the server is closed.
func (s *Server) track(c *conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.conns[c] = struct{}{}
	return true
}

func (s *Server) untrack(c *conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
}

func (s *Server) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// callStarted and callDone bracket a call's work up to its answer's write
// (see calls).
func (s *Server) callStarted() {
	s.mu.Lock()
	s.calls++
	s.mu.Unlock()
}

func (s *Server) callDone() {
	s.mu.Lock()
	s.calls--
	if s.calls == 0 && s.drained != nil {
		close(s.drained)
		s.drained = nil
	}
	s.mu.Unlock()
}

// handlerStarted and handlerDone bracket a handler's run (HandlersIdle),
// from the request's dispatch, OnRequest included.
func (s *Server) handlerStarted() {
	s.mu.Lock()
	s.handlers++
	s.mu.Unlock()
}

func (s *Server) handlerDone() {
	s.mu.Lock()
	if s.handlers--; s.handlers == 0 {
		s.handlersIdle.Broadcast()
	}
	s.mu.Unlock()
}

// HandlersIdle waits, at most timeout, until no call's handler runs, and
// reports whether none does. Answers being written do not count (a client
// that does not read must not hold it up), nor do calls answered Later once
// their handler has returned. An in-place upgrade asks it once the
// connections are paused: a connection whose client has gone no longer
// counts there, but the handlers of its calls run on (a Start launching an
// exec, an Exec adding one) and would change what is handed over after it
// was described, their events published into a queue already handed over.
func (s *Server) HandlersIdle(timeout time.Duration) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return condwait.Until(s.handlersIdle, timeout, func() bool { return s.handlers == 0 })
}

// Shutdown stops accepting connections, lets the calls already running
// write their answers until ctx ends, then closes everything as Close does.
// The call that made the daemon leave (the task API's Shutdown) is one of
// them: with Close alone its answer raced the connection's close, and the
// caller saw "ttrpc: closed" for a Shutdown that had worked. containerd
// ignores that error, but a tool that drives the shim directly does not.
// Calls that come on open connections meanwhile are served and waited for
// too; those answered Later (Wait) are not waited for.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closed = true
	listeners := s.listeners
	s.listeners = map[net.Listener]struct{}{}
	var idle chan struct{}
	if s.calls > 0 {
		if s.drained == nil {
			s.drained = make(chan struct{})
		}
		idle = s.drained
	}
	s.mu.Unlock()
	errs := closeListeners(listeners)
	if idle != nil {
		select {
		case <-idle:
		case <-ctx.Done():
			slog.Warn("ttrpc: calls still running at shutdown; their answers are dropped", "error", ctx.Err())
		}
	}
	return errors.Join(append(errs, s.Close())...)
}

// Close stops every listener and connection. Calls still running see their
// context cancelled; their answers are dropped (Shutdown waits for them).
func (s *Server) Close() error {
	s.mu.Lock()
	s.closed = true
	listeners := s.listeners
	conns := s.conns
	watch := s.watch
	s.listeners = map[net.Listener]struct{}{}
	s.conns = map[*conn]struct{}{}
	s.mu.Unlock()
	errs := closeListeners(listeners)
	for c := range conns {
		c.close()
	}
	if watch != nil {
		watch.close()
	}
	return errors.Join(errs...)
}

// closeListeners closes each listener; one closed already is no error.
func closeListeners(listeners map[net.Listener]struct{}) []error {
	var errs []error
	for l := range listeners {
		if err := l.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			errs = append(errs, err)
		}
	}
	return errs
}
