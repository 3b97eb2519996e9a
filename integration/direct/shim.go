package direct

import (
	"fmt"
	"net"
	"os"
	"testing"
	"time"

	"github.com/containerd/ttrpc"
	"golang.org/x/sys/unix"
)

// shimExitTimeout bounds the wait for a killed shim to be gone.
const shimExitTimeout = 5 * time.Second

// Shim is a running shim daemon. It is held by a pidfd: the daemon is not
// the test's child (`start` spawned it and exited), and a pidfd can neither
// signal nor watch a stranger that reused its PID.
type Shim struct {
	Answer Answer
	Socket string
	Pid    int
	Task   TaskAPI // the task service of the announced version

	client *ttrpc.Client
	pidfd  int
}

// StartShim runs `start`, finds the daemon it spawned, and dials the
// announced address with the announced task API version. t.Cleanup kills
// the daemon if it is still alive and removes its socket.
func StartShim(t testing.TB, l Launch) *Shim {
	t.Helper()
	a, err := l.Run()
	if err != nil {
		t.Fatal(err)
	}
	s := &Shim{Answer: a, Socket: a.Socket(), pidfd: -1}
	t.Cleanup(func() { s.cleanup(t) })
	if s.Pid, err = findDaemon(s.Socket); err != nil {
		t.Fatal(err)
	}
	if s.pidfd, err = unix.PidfdOpen(s.Pid, 0); err != nil {
		t.Fatalf("pidfd of shim %d: %v", s.Pid, err)
	}
	conn, err := net.Dial("unix", s.Socket)
	if err != nil {
		t.Fatalf("dial %s: %v", a.Address, err)
	}
	s.client = ttrpc.NewClient(conn)
	version := l.Mode.TaskVersion()
	if s.Task, err = NewTaskAPI(s.client, version); err != nil {
		t.Fatal(err)
	}
	return s
}

// TaskAPI returns a client of the given task API version on a new
// connection to the daemon (closed by t.Cleanup).
func (s *Shim) TaskAPI(t testing.TB, version int) TaskAPI {
	t.Helper()
	conn, err := net.Dial("unix", s.Socket)
	if err != nil {
		t.Fatalf("dial %s: %v", s.Socket, err)
	}
	c := ttrpc.NewClient(conn)
	t.Cleanup(func() { c.Close() })
	api, err := NewTaskAPI(c, version)
	if err != nil {
		t.Fatal(err)
	}
	return api
}

// findDaemon finds the daemon serving socket: the one process whose command
// line passes it as -socket (how `start` hands the daemon its socket). It
// looks again for a moment when it finds none: `start` may exit before the
// daemon's exec has finished, and until the kernel has set up the new
// program's arguments /proc/<pid>/cmdline reads empty (seen once in CI).
func findDaemon(socket string) (int, error) {
	deadline := time.Now().Add(findDaemonTimeout)
	for {
		found := processesWithArg("-socket", socket)
		if len(found) == 1 {
			return found[0], nil
		}
		if len(found) > 1 || time.Now().After(deadline) {
			return 0, fmt.Errorf("processes serving %s: %v, want exactly one daemon", socket, found)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// findDaemonTimeout bounds findDaemon's search.
const findDaemonTimeout = 5 * time.Second

// Exited waits up to timeout for the daemon to exit and reports whether it
// did.
func (s *Shim) Exited(timeout time.Duration) bool {
	if s.pidfd < 0 {
		return true
	}
	fds := []unix.PollFd{{Fd: int32(s.pidfd), Events: unix.POLLIN}}
	deadline := time.Now().Add(timeout)
	for {
		ms := max(int(time.Until(deadline).Milliseconds()), 0) // negative would wait forever
		n, err := unix.Poll(fds, ms)
		if err == unix.EINTR {
			continue
		}
		return err == nil && n > 0
	}
}

// Stays reports whether the daemon is still there after timeout and still
// serving: a daemon that decided to leave closes its socket at once, but
// may live on for a while (it waits for its clients to hang up, and for its
// last events), so its pid alone would not tell.
func (s *Shim) Stays(timeout time.Duration) bool {
	if s.Exited(timeout) {
		return false
	}
	c, err := net.Dial("unix", s.Socket)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// Kill kills the daemon (SIGKILL through its pidfd) and waits for it to go.
func (s *Shim) Kill() error {
	if s.pidfd < 0 || s.Exited(0) {
		return nil
	}
	if err := unix.PidfdSendSignal(s.pidfd, unix.SIGKILL, nil, 0); err != nil && err != unix.ESRCH {
		return fmt.Errorf("kill shim %d: %w", s.Pid, err)
	}
	if !s.Exited(shimExitTimeout) {
		return fmt.Errorf("shim %d still alive %v after SIGKILL", s.Pid, shimExitTimeout)
	}
	return nil
}

func (s *Shim) cleanup(t testing.TB) {
	if s.client != nil {
		s.client.Close()
	}
	if err := s.Kill(); err != nil {
		t.Error(err)
	}
	if s.pidfd >= 0 {
		unix.Close(s.pidfd)
		s.pidfd = -1
	}
	// A daemon that died without its Shutdown leaves its socket; the
	// next `start` would clean it, but nothing of this run may stay.
	if s.Socket != "" {
		if err := os.Remove(s.Socket); err != nil && !os.IsNotExist(err) {
			t.Errorf("remove shim socket: %v", err)
		}
	}
}
