package process

import (
	"context"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/example/containerd-shim-example-v2/internal/fdtest"
	shimio "github.com/example/containerd-shim-example-v2/io"
)

// containerd deletes a task without deleting the execs nobody deleted (a
// client that went away). The init's Delete releases them: an exited exec's
// stdin FIFO and pipes are closed and its waiters released; an exec still
// running (it outlived the wait at the init's exit) is killed, its waiters
// get that kill's status, and its exit is not published after the task's
// delete.
func TestInitDeleteReleasesLeftoverExecs(t *testing.T) {
	dir := t.TempDir()
	rt, r := fakeRuntime(t, dir, `
delete) exit 0;;`)
	var mu sync.Mutex
	var published []string
	c := &Container{ID: "c", Bundle: dir, rt: rt, execs: map[string]*Process{}, initReaped: true,
		events: Events{Exited: func(p *Process, _ Snapshot) {
			mu.Lock()
			published = append(published, p.ID)
			mu.Unlock()
		}}}
	c.execsIdle = sync.NewCond(&c.mu)
	c.init = newProcess(c, "", shimio.Config{}, nil)
	c.init.pid, c.init.status = 1<<30, Stopped

	// An exec that exited, with its stdin still open on a FIFO.
	fifo := filepath.Join(dir, "stdin")
	if err := unix.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	exited := newProcess(c, "exited", shimio.Config{Stdin: fifo}, nil)
	pipes, err := shimio.Open(exited.Stdio, c.ioEnv(exited.ID))
	if err != nil {
		t.Fatal(err)
	}
	exited.pipes, exited.pid, exited.status = pipes, 1<<30-1, Stopped
	c.execs[exited.ID] = exited

	// An exec still running.
	cmd := exec.Command("sleep", "100")
	exitc, err := r.Start(cmd)
	if err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	running := newProcess(c, "running", shimio.Config{}, nil)
	running.pid, running.status = cmd.Process.Pid, Running
	if running.pidfd, err = unix.PidfdOpen(running.pid, 0); err != nil {
		t.Fatal(err)
	}
	c.runningExecs = 1
	r.Then(running.pid, exitc, running.execExited)
	c.execs[running.ID] = running
	waited := make(chan Snapshot, 1)
	running.OnExit(func(st Snapshot) { waited <- st }) // containerd's Wait

	if err := c.init.Delete(context.Background(), func(Snapshot) {}); err != nil {
		t.Fatal(err)
	}
	if n := len(c.Execs()); n != 0 {
		t.Errorf("%d execs left after the container's delete", n)
	}
	select {
	case <-exited.exited:
	default:
		t.Errorf("the exited exec's waiters not released")
	}
	for _, p := range []*Process{exited, running} {
		if st := p.State(); st.Status != Deleted {
			t.Errorf("exec %s: %v, want deleted", p.ID, st.Status)
		}
	}
	select {
	case st := <-waited:
		if st.ExitCode != 137 || st.ExitedAt.IsZero() {
			t.Errorf("Wait of the exec killed at the delete: exit %d at %v, want 137 and its time", st.ExitCode, st.ExitedAt)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Wait of the exec killed at the delete not answered")
	}
	if open := fdsOn(t, fifo); open > 0 {
		t.Errorf("%d descriptors still open on the exited exec's stdin FIFO", open)
	}
	// The running exec is killed; its exit is reaped but not published.
	c.waitIdle(5 * time.Second)
	if c.runningExecs != 0 {
		t.Fatalf("the running exec was not killed")
	}
	mu.Lock()
	defer mu.Unlock()
	if len(published) > 0 {
		t.Errorf("exits published after the container's delete: %v", published)
	}
}

// fdsOn counts this process's descriptors open on path.
func fdsOn(t *testing.T, path string) int {
	t.Helper()
	return fdtest.CountWhere(t, func(target string) bool { return strings.HasPrefix(target, path) })
}
