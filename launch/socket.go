package launch

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	bundlefiles "github.com/example/containerd-shim-example-v2/bundle"
)

// DefaultSocketDir is where shim sockets live, as for containerd's own shims
// (whatever containerd's configured state dir): `ctr shim` finds them there.
const DefaultSocketDir = "/run/containerd/s"

// maxSocketPath is the longest filesystem socket path Linux takes with its
// NUL (sun_path is 108 bytes): containerd 2.3+ accepts a shim socket_dir of
// up to 42 bytes (107 - "/" - 64 hex digits) and the stock shim binds there.
// (containerd's library stops at 106 only for a daemon's -socket flag.)
const maxSocketPath = 107

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
	unlock, err := lockSocketDir(filepath.Dir(path))
	if err != nil {
		return nil, err
	}
	defer unlock()
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
		if dead, err := removeIfDead(path); err != nil {
			return nil, err
		} else if !dead {
			return nil, ErrDaemonRunning
		}
	}
}

// removeIfDead removes the socket file at path when nothing listens on it
// (socketDead) and says so; false: a daemon answers there, and its file is
// left alone. The caller holds the socket directory's lock.
func removeIfDead(path string) (bool, error) {
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err == nil && st.Mode&unix.S_IFMT != unix.S_IFSOCK {
		// Not a socket: connecting to it is refused too, but it is nobody's
		// stale socket (a bundle's address file may name any path, such as
		// /dev/null), and it is not ours to remove.
		return false, fmt.Errorf("%s is not a socket: left alone", path)
	}
	if !socketDead(path) {
		return false, nil
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return true, fmt.Errorf("remove stale socket %s: %w", path, err)
	}
	return true, nil
}

// lockSocketDir takes an exclusive lock on the socket directory (flock on
// the directory itself, so no lock file is left beside the sockets) and
// returns its release. Binding and listening are two steps, and between
// them the file is there but refuses connections: another `start` for the
// same group, or a `delete` checking whether the group's daemon is gone,
// would take it for a dead daemon's socket, remove it and bind its own, and
// the group would have two daemons, one without its socket file. Whoever
// probes, replaces or removes a socket holds the lock: for microseconds, or
// up to the probe's timeout when a live daemon is slow to accept.
func lockSocketDir(dir string) (func(), error) {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open socket directory: %w", err)
	}
	for {
		err = unix.Flock(fd, unix.LOCK_EX)
		if err != unix.EINTR {
			break
		}
	}
	if err != nil {
		// A file system without flock: go on as containerd's own shims
		// do, unserialized.
		slog.Warn("socket directory cannot be locked", "dir", dir, "error", err)
	}
	return func() { unix.Close(fd) }, nil // closing releases the lock
}

// socketFile is the socket file a daemon was started on, as it was then,
// so that the daemon removes it at exit only if it is still that file: once
// the daemon has closed its listener, a new `start` of the same group may
// take the path for a dead daemon's and bind its own. A file system may give
// the new file the old one's inode number at once; the change time tells
// them apart (`start` sets the mode before the daemon runs). Should anything
// else change the file's metadata later (an operator's chmod, a relabel),
// the daemon leaves its file behind: the safe side, since the next `start`
// finds nothing listening there and replaces it.
type socketFile struct {
	path     string
	dev, ino uint64
	ctime    unix.Timespec
}

// ownSocketFile notes the file at path ("" or unreadable: nothing to remove
// later).
func ownSocketFile(path string) socketFile {
	var st unix.Stat_t
	if path == "" || unix.Lstat(path, &st) != nil {
		return socketFile{}
	}
	return socketFile{path: path, dev: st.Dev, ino: st.Ino, ctime: st.Ctim}
}

// remove removes the file if it is still the one noted, under the socket
// directory's lock.
func (s socketFile) remove() {
	if s.path == "" {
		return
	}
	unlock, err := lockSocketDir(filepath.Dir(s.path))
	if err != nil {
		return
	}
	defer unlock()
	var st unix.Stat_t
	if unix.Lstat(s.path, &st) == nil && st.Dev == s.dev && st.Ino == s.ino && st.Ctim == s.ctime {
		_ = os.Remove(s.path)
	}
}

// socketDead reports whether nothing listens on the socket file at path: a
// connection is refused (or the file is gone). Any other outcome, a daemon
// that answers or one too busy to accept at once, counts as alive, so a live
// daemon's socket is never taken over or removed.
func socketDead(path string) bool {
	c, err := net.DialTimeout("unix", path, probeTimeout)
	if err == nil {
		c.Close()
		return false
	}
	return errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ENOENT)
}

// SocketAddress is the address containerd dials for a socket path.
func SocketAddress(path string) string { return "unix://" + path }

// socketOfBundle reads the socket path of the daemon serving a task from its
// bundle's `address` file.
func socketOfBundle(dir string) (string, error) {
	data, err := os.ReadFile(filepath.Join(dir, bundlefiles.AddressFile))
	if err != nil {
		return "", err
	}
	return SocketFromAddress(strings.TrimSpace(string(data))), nil
}

// SocketFromAddress is the inverse of SocketAddress.
func SocketFromAddress(addr string) string { return strings.TrimPrefix(addr, "unix://") }
