package process

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	shimio "github.com/example/containerd-shim-example-v2/io"
)

// execTestContainer is a container whose init is the test process itself,
// with one exec (e1, running args) not started yet, and the fake runtime
// whose case arms are given (fakeRuntime). The test process is made a
// subreaper, as the shim is.
func execTestContainer(t *testing.T, arms string) (*Container, *Process, string) {
	t.Helper()
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		t.Skipf("cannot become a subreaper: %v", err)
	}
	dir := t.TempDir()
	t.Setenv("FAKE_DIR", dir)
	rt, _ := fakeRuntime(t, dir, arms)
	c := &Container{ID: "c", Bundle: dir, rt: rt, execs: map[string]*Process{}}
	c.execsIdle = sync.NewCond(&c.mu)
	c.init = newProcess(c, "", shimio.Config{}, nil)
	c.init.pid, c.init.status = os.Getpid(), Running
	e := newProcess(c, "e1", shimio.Config{}, nil)
	e.execSpec = []byte(`{"args":["sleep","100"]}`)
	c.execs[e.ID] = e
	return c, e, dir
}

// pidIn reads a PID the fake runtime wrote into dir/name, and has it killed
// at the test's end.
func pidIn(t *testing.T, dir, name string) int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Kill(pid, unix.SIGKILL) })
	return pid
}

// runs reports whether pid is a process that has not exited (a zombie has).
func runs(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	f := strings.Fields(string(b)[strings.LastIndexByte(string(b), ')')+1:])
	return len(f) > 0 && f[0] != "Z" && f[0] != "X"
}

// The runtime starts the exec and writes its PID file, then fails: here the
// Start request's deadline kills it before it returns. Start fails, and the
// process it had started is killed, not left running with nothing tracking
// it (the PID file used to be read only when the runtime succeeded).
func TestExecWhoseRuntimeFailsAfterStartingItIsKilled(t *testing.T) {
	_, e, dir := execTestContainer(t, `
exec) while [ "$1" != --pid-file ]; do shift; done
	( sleep 100 </dev/null >/dev/null 2>&1 & echo $! > "$2" ); cp "$2" "$FAKE_DIR/launched"
	sleep 5;;`)
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	if err := e.startExec(ctx, func(int) {}); err == nil {
		t.Fatal("Start succeeded though the runtime was killed at the deadline")
	}
	pid := pidIn(t, dir, "launched")
	waitUntil(t, "the launched process is killed", func() bool { return !runs(pid) })
	if st := e.State(); st.Status != Stopped || st.ExitCode != NotStartedExitCode {
		t.Errorf("exec after the failed start: %v, exit %d; want stopped, %d", st.Status, st.ExitCode, NotStartedExitCode)
	}
}

// A very short exec exits, and is reaped, before the runtime returns; by
// then its PID is another process's (forced here through ns_last_pid; on a
// node it takes the PID allocator coming round). The shim must not take
// that process for the exec: no pidfd on it, and a Kill sent before the
// exec's exit is recorded reaches nobody. (The stranger is the fake
// runtime's child, re-parented to this test process: the shim's child, as
// any orphan of the container's would be.)
func TestExecExitedDuringItsLaunchPinsNoStranger(t *testing.T) {
	if _, err := os.Stat("/proc/sys/kernel/ns_last_pid"); err != nil || os.Geteuid() != 0 {
		t.Skip("forcing a PID's reuse needs root and ns_last_pid")
	}
	_, e, dir := execTestContainer(t, `
exec) while [ "$1" != --pid-file ]; do shift; done
	# It exits once re-parented to the shim (the runtime's parent), which
	# reaps it: one that exited while its parent, the subshell (a dash), still
	# ran was that shell's to reap, and dash reaps its finished background
	# jobs (wait4(-1, WNOHANG) before it exits), as no OCI runtime does.
	shim=$PPID
	( sh -c 'while [ "$(cut -d" " -f4 /proc/$$/stat)" != "$1" ]; do sleep 0.01; done; exit 3' sh "$shim" </dev/null >/dev/null 2>&1 & echo $! > "$2" )
	x=$(cat "$2"); while [ -e /proc/$x ]; do sleep 0.01; done; sleep 0.2
	echo $((x-2)) > /proc/sys/kernel/ns_last_pid # the subshell takes x-1, sleep x
	( sleep 100 </dev/null >/dev/null 2>&1 & echo $! > "$FAKE_DIR/stranger" );;`)
	var pinned bool
	if err := e.startExec(context.Background(), func(int) {
		pinned = e.pidfd >= 0 // under e.mu, before the exit is recorded
	}); err != nil {
		t.Fatalf("start: %v", err)
	}
	killErr := e.Kill(context.Background(), int(unix.SIGKILL), false)
	stranger := pidIn(t, dir, "stranger")
	if stranger != e.Pid() {
		t.Skipf("the PID was not reused (exec %d, other process %d)", e.Pid(), stranger)
	}
	if pinned {
		t.Error("the exec got a pidfd, on the process that reused its PID")
	}
	if _, err := e.Wait(context.Background()); err != nil {
		t.Fatal(err)
	}
	if st := e.State(); st.ExitCode != 3 {
		t.Errorf("exec exit %d, want 3", st.ExitCode)
	}
	time.Sleep(100 * time.Millisecond)
	if !runs(stranger) {
		t.Fatalf("the process that reused the exited exec's PID was killed (Kill: %v)", killErr)
	}
}
