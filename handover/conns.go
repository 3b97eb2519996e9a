package handover

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/containerd/ttrpc"

	"github.com/example/containerd-shim-example-v2/internal/condwait"
)

// Conns are the live server connections of one daemon, each a Conn: what an
// upgrade pauses, and what a daemon whose last pod is gone waits to see
// closed (WaitNone).
//
// Locking: mu guards set; cond (on mu) signals that a connection closed.
type Conns struct {
	mu   sync.Mutex
	cond *sync.Cond
	set  map[*Conn]struct{}
}

// NewConns returns an empty registry.
func NewConns() *Conns {
	cs := &Conns{set: make(map[*Conn]struct{})}
	cs.cond = sync.NewCond(&cs.mu)
	return cs
}

// Handshaker wraps inner so that every connection the server accepts is a
// registered Conn. A Conn handed over by a predecessor (returned first by
// Listener.Accept) keeps its carry; inner checks its socket all the same.
func (cs *Conns) Handshaker(inner ttrpc.Handshaker) ttrpc.Handshaker {
	return handshaker{inner: inner, conns: cs}
}

type handshaker struct {
	inner ttrpc.Handshaker
	conns *Conns
}

func (h handshaker) Handshake(ctx context.Context, conn net.Conn) (net.Conn, any, error) {
	hc, ok := conn.(*Conn)
	if !ok {
		uc, isUnix := conn.(*net.UnixConn)
		if !isUnix {
			return h.inner.Handshake(ctx, conn) // not ours to pause (tests on other transports)
		}
		hc = NewConn(uc, nil)
	}
	_, info, err := h.inner.Handshake(ctx, hc.UnixConn)
	if err != nil {
		return conn, info, err
	}
	h.conns.add(hc)
	return hc, info, nil
}

// add registers c; Close unregisters it.
func (cs *Conns) add(c *Conn) {
	c.mu.Lock()
	c.owner = cs
	c.mu.Unlock()
	cs.mu.Lock()
	cs.set[c] = struct{}{}
	cs.mu.Unlock()
}

func (cs *Conns) remove(c *Conn) {
	cs.mu.Lock()
	delete(cs.set, c)
	cs.cond.Broadcast()
	cs.mu.Unlock()
}

// WaitNone waits until no connection is open, at most timeout, and reports
// whether every client hung up.
func (cs *Conns) WaitNone(timeout time.Duration) bool {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	return condwait.Until(cs.cond, timeout, func() bool { return len(cs.set) == 0 })
}

func (cs *Conns) list() []*Conn {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	out := make([]*Conn, 0, len(cs.set))
	for c := range cs.set {
		out = append(out, c)
	}
	return out
}

// Len is how many connections are open.
func (cs *Conns) Len() int {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	return len(cs.set)
}

// PauseAll pauses every connection at once and waits for all (see
// Conn.Pause). The listener must be paused first, so that no connection is
// added meanwhile. On error every connection is resumed.
func (cs *Conns) PauseAll(timeout time.Duration) error {
	list := cs.list()
	errs := make([]error, len(list))
	var wg sync.WaitGroup
	for i, c := range list {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = c.Pause(timeout)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		cs.ResumeAll()
		return fmt.Errorf("pause connections: %w", err)
	}
	return nil
}

// ResumeAll undoes PauseAll.
func (cs *Conns) ResumeAll() {
	for _, c := range cs.list() {
		c.Resume()
	}
}

// ExportAll hands over every paused connection that is still open.
func (cs *Conns) ExportAll(fds *FDs) ([]ConnState, error) {
	var out []ConnState
	for _, c := range cs.list() {
		st, err := c.Export(fds)
		if err != nil {
			return nil, err
		}
		if st != nil {
			out = append(out, *st)
		}
	}
	return out, nil
}
