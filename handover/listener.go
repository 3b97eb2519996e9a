package handover

import (
	"fmt"
	"net"
	"os"
	"sync"
	"time"

	"github.com/example/containerd-shim-example-v2/internal/condwait"
)

// Listener is the daemon's listening socket, which a pause stops accepting
// from (clients that connect meanwhile wait in the socket's backlog) and an
// upgrade hands over. Connections handed over from a predecessor are
// returned by Accept first, so they go through the same handshake as new ones.
//
// Locking: mu guards queued, paused and closed; cond (on mu) signals them.
type Listener struct {
	l *net.UnixListener

	mu      sync.Mutex
	cond    *sync.Cond
	queued  []net.Conn // handed over, or accepted while a pause began
	paused  bool
	waiting bool // Accept is parked because of the pause
	closed  bool
}

// NewListener wraps l; queued are connections to return from Accept first.
func NewListener(l *net.UnixListener, queued []net.Conn) *Listener {
	ln := &Listener{l: l, queued: queued}
	ln.cond = sync.NewCond(&ln.mu)
	return ln
}

// Accept returns the next connection, waiting while paused.
func (ln *Listener) Accept() (net.Conn, error) {
	for {
		ln.mu.Lock()
		for ln.paused && !ln.closed {
			ln.waiting = true
			ln.cond.Broadcast()
			ln.cond.Wait()
		}
		ln.waiting = false
		if ln.closed {
			ln.mu.Unlock()
			return nil, net.ErrClosed
		}
		if len(ln.queued) > 0 {
			c := ln.queued[0]
			ln.queued = ln.queued[1:]
			ln.mu.Unlock()
			return c, nil
		}
		ln.mu.Unlock()
		c, err := ln.l.AcceptUnix()
		if err != nil {
			if isTimeout(err) {
				continue // Pause woke us
			}
			return nil, err
		}
		ln.mu.Lock()
		if ln.paused {
			// Accepted as the pause began: it is handed over with the rest.
			ln.queued = append(ln.queued, c)
			ln.mu.Unlock()
			continue
		}
		ln.mu.Unlock()
		return c, nil
	}
}

// Pause stops accepting and waits until Accept is parked (or timeout).
func (ln *Listener) Pause(timeout time.Duration) error {
	ln.mu.Lock()
	ln.paused = true
	ln.mu.Unlock()
	_ = ln.l.SetDeadline(time.Now())
	ln.mu.Lock()
	defer ln.mu.Unlock()
	if !condwait.Until(ln.cond, timeout, func() bool { return ln.waiting || ln.closed }) {
		return fmt.Errorf("listener: accept loop not parked within %v", timeout)
	}
	return nil
}

// Resume undoes Pause.
func (ln *Listener) Resume() {
	_ = ln.l.SetDeadline(time.Time{})
	ln.mu.Lock()
	ln.paused = false
	ln.cond.Broadcast()
	ln.mu.Unlock()
}

// Close closes the socket and releases a parked Accept.
func (ln *Listener) Close() error {
	ln.mu.Lock()
	ln.closed = true
	for _, c := range ln.queued {
		c.Close()
	}
	ln.queued = nil
	ln.cond.Broadcast()
	ln.mu.Unlock()
	return ln.l.Close()
}

// Addr is the socket's address.
func (ln *Listener) Addr() net.Addr { return ln.l.Addr() }

// ListenerState is a paused listener as handed over: its socket and the
// connections it accepted but had not returned yet (no bytes read from them).
type ListenerState struct {
	FD     int   `json:"fd"`
	Queued []int `json:"queued,omitempty"`
}

// Export hands over a paused listener.
func (ln *Listener) Export(fds *FDs) (*ListenerState, error) {
	ln.mu.Lock()
	defer ln.mu.Unlock()
	if !ln.paused || !ln.waiting {
		return nil, fmt.Errorf("handover: listener exported without a completed pause")
	}
	f, err := ln.l.File()
	if err != nil {
		return nil, fmt.Errorf("handover: listening socket: %w", err)
	}
	st := &ListenerState{}
	if st.FD, err = fds.Keep(f); err != nil {
		return nil, err
	}
	for _, c := range ln.queued {
		uc, ok := c.(*net.UnixConn)
		if !ok {
			return nil, fmt.Errorf("handover: queued connection of type %T", c)
		}
		cf, err := uc.File()
		if err != nil {
			return nil, fmt.Errorf("handover: queued connection: %w", err)
		}
		fd, err := fds.Keep(cf)
		if err != nil {
			return nil, err
		}
		st.Queued = append(st.Queued, fd)
	}
	return st, nil
}

// ImportListener makes a listener of a handed-over socket; handed-over
// connections (already carried ones first) are returned by its Accept.
func ImportListener(st ListenerState, conns []net.Conn) (*Listener, error) {
	f := os.NewFile(uintptr(st.FD), "handed-over listener")
	if f == nil {
		return nil, fmt.Errorf("handover: listener fd %d is not open", st.FD)
	}
	defer f.Close()
	nl, err := net.FileListener(f)
	if err != nil {
		return nil, fmt.Errorf("handover: listener fd %d: %w", st.FD, err)
	}
	ul, ok := nl.(*net.UnixListener)
	if !ok {
		nl.Close()
		return nil, fmt.Errorf("handover: listener fd %d is not a unix socket", st.FD)
	}
	for _, fd := range st.Queued {
		c, err := ImportConn(ConnState{FD: fd})
		if err != nil {
			return nil, err
		}
		conns = append(conns, c.UnixConn)
	}
	return NewListener(ul, conns), nil
}
