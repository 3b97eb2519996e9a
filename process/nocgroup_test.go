package process

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/example/containerd-shim-example-v2/internal/procstat"
	shimio "github.com/example/containerd-shim-example-v2/io"
)

// A container without a cgroup of its own, in the shim's pid namespace:
// when its init exits, the orphan it left (in its session, reparented to the
// shim) is killed by the shim before the exit is reported, and the runtime's
// kill --all, which looks for processes in a cgroup there is none of, is not
// called for nothing.
func TestInitExitWithoutACgroupKillsWhatItLeft(t *testing.T) {
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		t.Skipf("cannot become a subreaper: %v", err)
	}
	defer func() { _ = unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0) }()
	dir := t.TempDir()
	calls := filepath.Join(dir, "calls")
	rt, r := fakeRuntime(t, dir, "\nkill) echo \"$*\" >> "+calls+";;")
	c := &Container{ID: "c", Bundle: dir, rt: rt, execs: map[string]*Process{}, inShimCgroup: true}
	c.execsIdle = sync.NewCond(&c.mu)
	var orphanAtExit procstat.Stat
	var orphan int
	reported := make(chan struct{})
	c.events.Exited = func(*Process, Snapshot) {
		orphanAtExit, _ = procstat.Read(orphan)
		close(reported)
	}
	c.init = newProcess(c, "", shimio.Config{}, nil)

	// The init: a session leader (as runc starts it) that leaves a sleep
	// behind and waits on its stdin.
	init := exec.Command("sh", "-c", `sleep 60 & echo $!; read x`)
	init.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	stdin, err := init.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	defer stdin.Close()
	out, err := init.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	exitc, err := r.Start(init)
	if err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(out)
	if !sc.Scan() {
		_ = init.Process.Kill()
		t.Fatal("the init printed no pid")
	}
	if orphan, err = strconv.Atoi(strings.TrimSpace(sc.Text())); err != nil {
		_ = init.Process.Kill()
		t.Fatalf("the init said %q", sc.Text())
	}
	t.Cleanup(func() { _ = syscall.Kill(orphan, syscall.SIGKILL) }) // reaped by r
	c.init.pid, c.init.status = init.Process.Pid, Running
	r.Then(init.Process.Pid, exitc, c.initExited)

	_ = init.Process.Kill()
	select {
	case <-reported:
	case <-time.After(10 * time.Second):
		t.Fatal("the init's exit was not reported")
	}
	if orphanAtExit.State != 0 && !orphanAtExit.Exiting() {
		t.Errorf("the init's orphan %d still ran when the exit was reported: %+v", orphan, orphanAtExit)
	}
	if got, err := os.ReadFile(calls); err == nil {
		t.Errorf("the runtime was asked to kill: %q", got)
	}
}
