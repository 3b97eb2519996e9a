package direct

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	taskv3 "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/ttrpc"
)

// A tool that runs the daemon itself, with -socket <path> and no listening
// socket on fd 3, gets a daemon serving that path, as the stock shim
// library's daemon does (PROTOCOL.md §1.4); a Shutdown with nothing held
// ends it, and it removes the socket file it made.
func TestDaemonServesItsSocketFlag(t *testing.T) {
	t.Parallel()
	if err := setup(); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(t.TempDir(), "s", "shim.sock")
	// A file, not a pipe: Wait must not wait for whatever else holds it.
	stderr, err := os.Create(filepath.Join(t.TempDir(), "stderr"))
	if err != nil {
		t.Fatal(err)
	}
	defer stderr.Close()
	logged := func() string { b, _ := os.ReadFile(stderr.Name()); return string(b) }
	cmd := exec.Command(ShimPath(), "-namespace", "direct-socket", "-id", "socketflag", "-socket", sock)
	cmd.Dir = t.TempDir()
	cmd.Stderr = stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		select {
		case <-exited:
		default:
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) // the daemon and anything it started
			<-exited
		}
	})
	var conn net.Conn
	for deadline := time.Now().Add(10 * time.Second); conn == nil; {
		c, err := net.Dial("unix", sock)
		if err == nil {
			conn = c
			break
		}
		select {
		case err := <-exited:
			exited <- err // for the cleanup
			t.Fatalf("daemon with -socket %s exited (%v) without serving it: %s", sock, err, logged())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("daemon with -socket %s does not serve it: %s", sock, logged())
		}
	}
	client := ttrpc.NewClient(conn)
	defer client.Close()
	task := taskv3.NewTTRPCTaskClient(client)
	ctx := TestContext(t, 10*time.Second)
	if _, err := task.State(ctx, &taskv3.StateRequest{ID: "nothing"}); ErrClass(err) != "NotFound" {
		t.Errorf("State of an unknown task: %v, want NotFound", err)
	}
	if _, err := task.Shutdown(ctx, &taskv3.ShutdownRequest{ID: "socketflag"}); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	select {
	case err := <-exited:
		exited <- err
	case <-time.After(10 * time.Second):
		t.Fatalf("daemon still running 10s after Shutdown: %s", logged())
	}
	if _, err := os.Lstat(sock); !os.IsNotExist(err) {
		t.Errorf("socket file after the daemon left: %v, want it removed", err)
	}
}
