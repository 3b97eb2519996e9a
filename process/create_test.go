package process

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/example/containerd-shim-example-v2/bundle"
	shimio "github.com/example/containerd-shim-example-v2/io"
)

// A bundle used for a second task may still hold the first init's exit
// record; Create removes it, so `delete` never reports that exit for the new
// task. (The fake runtime refuses the create; the record must be gone all
// the same.)
func TestCreateRemovesAPreviousExitRecord(t *testing.T) {
	dir := t.TempDir()
	spec := `{"ociVersion":"1.0.2","process":{"args":["true"],"cwd":"/"},"root":{"path":"rootfs"}}`
	if err := os.WriteFile(filepath.Join(dir, "config.json"), []byte(spec), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := bundle.WriteExit(dir, bundle.Exit{Pid: 4242, Status: 3, ExitedAt: time.Unix(1, 0)}); err != nil {
		t.Fatal(err)
	}
	rt, r := fakeRuntime(t, dir, "") // refuses every command
	ctx := context.Background()
	_, err := Create(ctx, r, CreateConfig{ID: "c", Namespace: "ns", Bundle: dir, Runtime: rt}, func(int) {})
	if err == nil {
		t.Fatal("the fake runtime's create succeeded")
	}
	if _, ok, rerr := bundle.ReadExit(dir); ok || rerr != nil {
		t.Errorf("the previous init's exit record is still there (read error %v)", rerr)
	}
	if _, serr := os.Stat(filepath.Join(dir, bundle.ExitFile)); !errors.Is(serr, os.ErrNotExist) {
		t.Errorf("exit record file: %v, want it removed", serr)
	}
}

// A launch that fails after the runtime succeeded (here: the runtime's exec
// starts the process but never hands over its pty master) is reported
// failed, and the process it started is killed: nothing would track,
// signal or report it, and it would run on unseen in the container.
func TestProcessOfAFailedLaunchIsKilled(t *testing.T) {
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		t.Skipf("cannot become a subreaper: %v", err)
	}
	dir := t.TempDir()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("FAKE_SELF", self)
	rt, _ := fakeRuntime(t, dir, `
exec) while [ $# -gt 0 ]; do case "$1" in --pid-file) pidf=$2;; --console-socket) sock=$2;; esac; shift; done
	sleep 100 </dev/null >/dev/null 2>&1 & echo $! > "$pidf"
	PROCESS_TEST_CONSOLE_HANGUP=$sock "$FAKE_SELF";;`)
	c := &Container{ID: "c", Bundle: dir, rt: rt, socketDir: dir, execs: map[string]*Process{}}
	c.execsIdle = sync.NewCond(&c.mu)
	c.init = newProcess(c, "", shimio.Config{}, nil)
	e := newProcess(c, "e1", shimio.Config{Terminal: true}, nil)
	e.execSpec = []byte(`{"args":["sleep","100"],"terminal":true}`)
	c.execs[e.ID] = e

	err = e.startExec(context.Background(), func(int) { t.Error("the failed exec was reported started") })
	if err == nil {
		t.Fatal("exec start succeeded without a pty master")
	}
	t.Logf("exec start: %v", err)
	data, rerr := os.ReadFile(filepath.Join(dir, bundle.ExecPidFile(e.ID)))
	if rerr != nil {
		t.Fatalf("the fake runtime wrote no PID: %v", rerr)
	}
	pid, perr := strconv.Atoi(strings.TrimSpace(string(data)))
	if perr != nil {
		t.Fatal(perr)
	}
	t.Cleanup(func() { unix.Kill(pid, unix.SIGKILL) })
	waitUntil(t, "the process of the failed exec gone", func() bool {
		return unix.Kill(pid, 0) == unix.ESRCH
	})
}
