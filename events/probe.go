package events

import (
	"errors"
	"net"
	"os"
	"strings"
	"syscall"
	"time"
)

// probeTimeout bounds Probe's connect: a listener slow to accept is there.
const probeTimeout = 100 * time.Millisecond

// Probe tells whether nothing listens on containerd's socket at address
// (unix://path or a path): its connection is refused or the socket is gone,
// as while containerd is stopped or restarting. If something listens,
// upSince is when the socket was made (its modification time): containerd
// makes it afresh each time it starts, so a restart shows as a newer time.
// An empty address is not down, with upSince unknown (zero); so is a socket
// slow to accept. It costs a connect, a close and a stat; containerd sees a
// connection that ends without a request.
func Probe(address string) (down bool, upSince time.Time) {
	path := strings.TrimPrefix(address, "unix://")
	if path == "" {
		return false, time.Time{}
	}
	conn, err := net.DialTimeout("unix", path, probeTimeout)
	if err != nil && (errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ENOENT)) {
		return true, time.Time{}
	}
	if err == nil {
		_ = conn.Close()
	}
	if st, err := os.Stat(path); err == nil {
		upSince = st.ModTime()
	}
	return false, upSince
}
