package process

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	shimio "github.com/example/containerd-shim-example-v2/io"
)

// The init of a container without a PID namespace of its own dies while the
// runtime is still launching an exec: the init's exit kills the container's
// processes (`kill --all`) before the exec has joined. The exec must not
// outlive its container; the init's exit is reported after the exec's, and
// well before the wait for execs gives up.
func TestExecLaunchedAsTheInitDiesIsKilled(t *testing.T) {
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		t.Skipf("cannot become a subreaper: %v", err)
	}
	dir := t.TempDir()
	// The fake runtime's exec says it has begun, waits until the test has
	// the init die, then leaves a process behind (re-parented to this test
	// process) and writes its PID; its kill --all finds nothing yet, as
	// runc's would.
	t.Setenv("FAKE_DIR", dir)
	rt, r := fakeRuntime(t, dir, `
kill) exit 0;;
exec) touch "$FAKE_DIR/begun"; while [ ! -e "$FAKE_DIR/go" ]; do sleep 0.01; done
	while [ "$1" != --pid-file ]; do shift; done; sleep 100 </dev/null >/dev/null 2>&1 & echo $! > "$2";;`)
	c := &Container{ID: "c", Bundle: dir, rt: rt, execs: map[string]*Process{}}
	c.execsIdle = sync.NewCond(&c.mu)
	c.init = newProcess(c, "", shimio.Config{}, nil)
	initCmd := exec.Command("sleep", "100")
	initExit, err := r.Start(initCmd)
	if err != nil {
		t.Fatal(err)
	}
	c.init.pid, c.init.status = initCmd.Process.Pid, Running
	r.Then(c.init.pid, initExit, c.initExited)
	e := newProcess(c, "e1", shimio.Config{}, nil)
	e.execSpec = []byte(`{"args":["sleep","100"]}`)
	c.execs[e.ID] = e
	t.Cleanup(func() {
		initCmd.Process.Kill()
		if pid := e.Pid(); pid > 0 {
			unix.Kill(pid, unix.SIGKILL)
		}
	})

	started := make(chan error, 1)
	go func() { started <- e.startExec(context.Background(), func(int) {}) }()
	waitUntil(t, "the runtime's exec begins", func() bool {
		_, err := os.Stat(filepath.Join(dir, "begun"))
		return err == nil
	})
	if err := initCmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the init's exit is taken", func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.initReaped
	})
	if err := os.WriteFile(filepath.Join(dir, "go"), nil, 0o600); err != nil { // the exec joins now
		t.Fatal(err)
	}
	if err := <-started; err != nil {
		t.Fatalf("exec start: %v", err)
	}
	select {
	case <-c.init.exited:
	case <-time.After(execsBeforeInitTimeout - time.Second):
		t.Fatalf("the init's exit is not recorded after %v: the exec %d it waits for still runs", execsBeforeInitTimeout-time.Second, e.Pid())
	}
	if st := e.State(); st.Status != Stopped || st.ExitCode != 137 {
		t.Fatalf("exec after the init's exit: %v, exit %d; want stopped, killed (137)", st.Status, st.ExitCode)
	}
}

// waitUntil polls cond for up to 5 s.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 5 s", what)
		}
	}
}
