package process

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/containerd/errdefs"

	shimio "github.com/example/containerd-shim-example-v2/io"
)

// A Start that takes long (a poststart hook that hangs, say) holds the
// process's lock for as long as the runtime runs. State, Pid and the
// container's Pids, which Connect, Pids and State requests use, answer
// meanwhile instead of waiting for it.
func TestStateAnswersDuringAStart(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("FAKE_DIR", dir)
	rt, _ := fakeRuntime(t, dir, `
start) touch "$FAKE_DIR/begun"; while [ ! -e "$FAKE_DIR/go" ]; do sleep 0.01; done; exit 0;;
ps) echo '[4242]';;`)
	c := &Container{ID: "c", Bundle: dir, rt: rt, execs: map[string]*Process{}}
	c.execsIdle = sync.NewCond(&c.mu)
	c.init = newProcess(c, "", shimio.Config{}, nil)
	c.init.pid = 4242 // never signalled: the fake start runs nothing

	started := make(chan error, 1)
	var startedPid int
	go func() { started <- c.init.Start(context.Background(), func(pid int) { startedPid = pid }) }()
	t.Cleanup(func() { _ = os.WriteFile(filepath.Join(dir, "go"), nil, 0o600) })
	waitUntil(t, "the runtime's start begins", func() bool {
		_, err := os.Stat(filepath.Join(dir, "begun"))
		return err == nil
	})

	answered := make(chan string, 1)
	go func() {
		st := c.init.State()
		pid := c.init.Pid()
		pids, err := c.Pids(context.Background())
		switch {
		case st.Status != Created || st.Pid != 4242 || pid != 4242:
			answered <- "state during the start: " + st.Status.String()
		case err != nil || !slices.Equal(pids, []int{4242}):
			answered <- "pids during the start: " + errString(err)
		default:
			answered <- ""
		}
	}()
	select {
	case msg := <-answered:
		if msg != "" {
			t.Error(msg)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("State, Pid or Pids waited for the Start in progress")
	}

	if err := os.WriteFile(filepath.Join(dir, "go"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := <-started; err != nil {
		t.Fatalf("start: %v", err)
	}
	if st := c.init.State(); st.Status != Running || startedPid != 4242 {
		t.Errorf("after the start: %s, started callback with pid %d; want running, 4242", st.Status, startedPid)
	}
}

// An exec whose Start fails never runs: it is stopped with
// NotStartedExitCode, and a Wait sent before the Start (as containerd's
// client sends it) is answered at once instead of at the exec's Delete. A
// second Start is refused; the Delete reports the same status.
func TestExecWhoseStartFailedAnswersWait(t *testing.T) {
	dir := t.TempDir()
	rt, _ := fakeRuntime(t, dir, `
exec) echo "exec failed: no such file or directory" >&2; exit 1;;`)
	c := &Container{ID: "c", Bundle: dir, rt: rt, execs: map[string]*Process{}}
	c.execsIdle = sync.NewCond(&c.mu)
	c.init = newProcess(c, "", shimio.Config{}, nil)
	c.init.pid, c.init.status = os.Getpid(), Running // never signalled here
	e := newProcess(c, "e1", shimio.Config{}, nil)
	e.execSpec = []byte(`{"args":["/no/such/binary"]}`)
	c.execs[e.ID] = e

	waited := make(chan Snapshot, 1)
	go func() {
		st, _ := e.Wait(context.Background())
		waited <- st
	}()
	if err := e.Start(context.Background(), func(int) { t.Error("onStarted called for a failed start") }); err == nil {
		t.Fatal("start of the exec succeeded")
	}
	select {
	case st := <-waited:
		if st.Status != Stopped || st.ExitCode != NotStartedExitCode || st.ExitedAt.IsZero() {
			t.Errorf("Wait after the failed start: %+v, want stopped with %d", st, NotStartedExitCode)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Wait was not answered after the failed start")
	}
	if st := e.State(); st.Status != Stopped || st.Pid != 0 {
		t.Errorf("State after the failed start: %+v", st)
	}
	if err := e.Start(context.Background(), func(int) {}); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Errorf("second start: %v, want FailedPrecondition", err)
	}
	c.mu.Lock()
	running := c.runningExecs
	c.mu.Unlock()
	if running != 0 {
		t.Errorf("%d running execs counted after the failed start", running)
	}
	var deleted Snapshot
	if err := e.Delete(context.Background(), func(st Snapshot) { deleted = st }); err != nil {
		t.Fatalf("delete: %v", err)
	}
	if deleted.ExitCode != NotStartedExitCode {
		t.Errorf("Delete reports exit %d, want %d", deleted.ExitCode, NotStartedExitCode)
	}
}

func errString(err error) string {
	if err == nil {
		return "<nil>"
	}
	return err.Error()
}
