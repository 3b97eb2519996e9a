package launch

import (
	"context"
	"net"
	"sync"
	"time"

	"github.com/containerd/ttrpc"
)

// hangupTimeout bounds how long a daemon whose last pod was shut down waits
// for containerd to close its connections before leaving anyway. containerd
// closes them right after ShutdownSandbox answers.
const hangupTimeout = 5 * time.Second

// clientConns counts the daemon's open client connections. A daemon that
// served a pod leaves after ShutdownSandbox, but only once containerd has
// hung up: leaving at once could cut the answer to ShutdownSandbox itself
// (ttrpc's server has no "answer sent" hook), and containerd would fail the
// pod's removal.
type clientConns struct {
	mu   sync.Mutex
	open int
	none chan struct{} // closed while open == 0; replaced when a client connects
}

func newClientConns() *clientConns {
	c := &clientConns{none: make(chan struct{})}
	close(c.none)
	return c
}

// handshaker wraps the server's handshaker so that every accepted connection
// is counted until it is closed.
func (c *clientConns) handshaker(inner ttrpc.Handshaker) ttrpc.Handshaker {
	return countingHandshaker{inner: inner, conns: c}
}

type countingHandshaker struct {
	inner ttrpc.Handshaker
	conns *clientConns
}

func (h countingHandshaker) Handshake(ctx context.Context, conn net.Conn) (net.Conn, any, error) {
	conn, info, err := h.inner.Handshake(ctx, conn)
	if err != nil {
		return conn, info, err
	}
	c := h.conns
	c.mu.Lock()
	if c.open == 0 {
		c.none = make(chan struct{})
	}
	c.open++
	c.mu.Unlock()
	return &countedConn{Conn: conn, owner: c}, info, nil
}

func (c *clientConns) closed() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.open--
	if c.open == 0 {
		close(c.none)
	}
}

// waitNone waits until no client is connected, or timeout; it reports
// whether every client hung up.
func (c *clientConns) waitNone(timeout time.Duration) bool {
	c.mu.Lock()
	none := c.none
	c.mu.Unlock()
	select {
	case <-none:
		return true
	case <-time.After(timeout):
		return false
	}
}

type countedConn struct {
	net.Conn
	owner *clientConns
	once  sync.Once
}

func (c *countedConn) Close() error {
	c.once.Do(c.owner.closed)
	return c.Conn.Close()
}
