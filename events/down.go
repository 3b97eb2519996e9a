package events

import (
	"errors"
	"net"
	"strings"
	"syscall"
	"time"
)

// downProbeTimeout bounds Down's connect: a listener slow to accept is there.
const downProbeTimeout = 100 * time.Millisecond

// Down reports whether nothing listens on containerd's socket at address
// (unix://path or a path): its connection is refused or the socket is gone,
// as while containerd is stopped or restarting. An accepted connection, a
// slow one and an empty address are not down. It costs a connect and a
// close; containerd sees a connection that ends without a request.
func Down(address string) bool {
	path := strings.TrimPrefix(address, "unix://")
	if path == "" {
		return false
	}
	conn, err := net.DialTimeout("unix", path, downProbeTimeout)
	if err == nil {
		_ = conn.Close()
		return false
	}
	return errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ENOENT)
}
