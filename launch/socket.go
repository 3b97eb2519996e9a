package launch

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// DefaultSocketDir is where shim sockets live, as for containerd's own shims
// (whatever containerd's configured state dir): `ctr shim` finds them there.
const DefaultSocketDir = "/run/containerd/s"

// maxSocketPath is the longest filesystem socket path Linux accepts
// (sun_path is 108 bytes with its NUL; containerd's library stops at 106).
const maxSocketPath = 106

// probeTimeout bounds the test connection to an existing socket: a live
// daemon accepts in microseconds.
const probeTimeout = 100 * time.Millisecond

// SocketPath names the socket of the daemon serving group in namespace for
// the containerd at address: one socket, so one daemon, per group.
func SocketPath(dir, address, namespace, group string) (string, error) {
	sum := sha256.Sum256([]byte(filepath.Join(address, namespace, group)))
	p := filepath.Join(dir, hex.EncodeToString(sum[:]))
	if len(p) > maxSocketPath {
		return "", fmt.Errorf("socket path %s is longer than %d bytes", p, maxSocketPath)
	}
	return p, nil
}

// ErrDaemonRunning means a live daemon already serves the socket.
var ErrDaemonRunning = errors.New("a shim daemon already serves this socket")

// Listen binds the socket (mode 0600, in a directory only root may enter).
// A socket file that a live daemon answers on yields ErrDaemonRunning; a
// stale one is removed and bound afresh.
func Listen(path string) (*net.UnixListener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("create socket directory: %w", err)
	}
	for attempt := 0; ; attempt++ {
		l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
		if err == nil {
			l.SetUnlinkOnClose(false) // the daemon, not this process, owns the file
			if err := os.Chmod(path, 0o600); err != nil {
				l.Close()
				os.Remove(path)
				return nil, fmt.Errorf("chmod socket: %w", err)
			}
			return l, nil
		}
		if !errors.Is(err, syscall.EADDRINUSE) || attempt > 0 {
			return nil, fmt.Errorf("listen on %s: %w", path, err)
		}
		if c, derr := net.DialTimeout("unix", path, probeTimeout); derr == nil {
			c.Close()
			return nil, ErrDaemonRunning
		}
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("remove stale socket %s: %w", path, err)
		}
	}
}

// SocketAddress is the address containerd dials for a socket path.
func SocketAddress(path string) string { return "unix://" + path }

// SocketFromAddress is the inverse of SocketAddress.
func SocketFromAddress(addr string) string { return strings.TrimPrefix(addr, "unix://") }
