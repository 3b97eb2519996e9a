package handover

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/containerd/ttrpc"
)

// Conns are the live server connections of one daemon, each a Conn.
//
// Locking: mu guards set.
type Conns struct {
	mu  sync.Mutex
	set map[*Conn]struct{}
}

// NewConns returns an empty registry.
func NewConns() *Conns { return &Conns{set: make(map[*Conn]struct{})} }

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
	return &registered{Conn: hc, owner: h.conns}, info, nil
}

// registered unregisters its Conn when the server closes it.
type registered struct {
	*Conn
	owner *Conns
	once  sync.Once
}

func (r *registered) Close() error {
	r.once.Do(func() { r.owner.remove(r.Conn) })
	return r.Conn.Close()
}

func (cs *Conns) add(c *Conn) {
	cs.mu.Lock()
	cs.set[c] = struct{}{}
	cs.mu.Unlock()
}

func (cs *Conns) remove(c *Conn) {
	cs.mu.Lock()
	delete(cs.set, c)
	cs.mu.Unlock()
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
