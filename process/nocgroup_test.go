package process

import (
	"bufio"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/example/containerd-shim-example-v2/internal/procstat"
	"github.com/example/containerd-shim-example-v2/internal/proctree"
	shimio "github.com/example/containerd-shim-example-v2/io"
	"github.com/example/containerd-shim-example-v2/reaper"
)

// newNoCgroupContainer returns a container without a cgroup of its own in
// the test's pid namespace, under a fake runtime that records in calls what
// it is asked to kill, and its reaper. The test process is made a subreaper
// (as the shim is) for the test's length.
func newNoCgroupContainer(t *testing.T) (c *Container, r *reaper.Reaper, calls string) {
	t.Helper()
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		t.Skipf("cannot become a subreaper: %v", err)
	}
	t.Cleanup(func() { _ = unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0) })
	dir := t.TempDir()
	calls = filepath.Join(dir, "calls")
	rt, r := fakeRuntime(t, dir, "\nkill) echo \"$*\" >> "+calls+";;")
	c = &Container{ID: "c", Bundle: dir, rt: rt, execs: map[string]*Process{}, inShimCgroup: true, ownMountNS: true}
	c.execsIdle = sync.NewCond(&c.mu)
	c.init = newProcess(c, "", shimio.Config{}, nil)
	return c, r, calls
}

// runInit starts c's init under r, run by wrapper (a command that execs
// the rest of its arguments; none when empty): a session leader (as runc starts
// one) that starts background (a shell command) in the background and
// sleeps, surviving a SIGTERM; its exit is reported as an init's. It
// returns the init and the background process's PID.
func runInit(t *testing.T, c *Container, r *reaper.Reaper, wrapper []string, background string) (*exec.Cmd, int) {
	t.Helper()
	// A handler, not an ignored signal: the init's children keep the default.
	argv := slices.Concat(wrapper, []string{"sh", "-c", `trap : TERM; ` + background + ` & echo $!; while :; do sleep 1; done`})
	init := exec.Command(argv[0], argv[1:]...)
	init.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	out, err := init.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	exitc, err := r.Start(init)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = init.Process.Kill() })
	sc := bufio.NewScanner(out)
	if !sc.Scan() {
		t.Fatal("the init printed no pid")
	}
	bg, err := strconv.Atoi(strings.TrimSpace(sc.Text()))
	if err != nil {
		t.Fatalf("the init said %q", sc.Text())
	}
	t.Cleanup(func() { _ = syscall.Kill(bg, syscall.SIGKILL) }) // reaped by r
	c.init.pid, c.init.status = init.Process.Pid, Running
	c.init.session = c.noteSession(init.Process.Pid) // as Create does
	c.holdMountNS(init.Process.Pid)
	r.Then(init.Process.Pid, exitc, c.initExited)
	return init, bg
}

// runtimeCalls is what the fake runtime of newNoCgroupContainer was asked
// to kill ("" for nothing).
func runtimeCalls(calls string) string {
	data, _ := os.ReadFile(calls)
	return string(data)
}

// A container without a cgroup of its own, in the shim's pid namespace:
// when its init exits, what it left is killed by the shim before the exit
// is reported: an orphan (in its session, reparented to the shim), and a
// daemon (a session of its own, found by the container's mount namespace,
// which the shim lets go after). The runtime's kill --all, which looks for
// processes in a cgroup there is none of, is not called for nothing.
func TestInitExitWithoutACgroupKillsWhatItLeft(t *testing.T) {
	for _, tc := range []struct {
		name       string
		wrapper    []string // runs the init
		background string   // what the init leaves
	}{
		{"orphan", nil, "sleep 60"},
		{"daemon", []string{"unshare", "--mount", "--propagation", "private"}, "setsid sleep 60"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.wrapper != nil && os.Geteuid() != 0 {
				t.Skip("a mount namespace needs root")
			}
			c, r, calls := newNoCgroupContainer(t)
			var leftAtExit procstat.Stat
			var left atomic.Int64 // set after the callback is registered
			reported := make(chan struct{})
			c.events.Exited = func(*Process, Snapshot) {
				leftAtExit, _ = procstat.Read(int(left.Load()))
				close(reported)
			}
			init, pid := runInit(t, c, r, tc.wrapper, tc.background)
			left.Store(int64(pid))
			for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(2 * time.Millisecond) {
				if st, err := procstat.Read(pid); err == nil && (tc.wrapper == nil || st.Session == pid) {
					break // a daemon's setsid has made its session
				}
				if time.Now().After(deadline) {
					t.Fatalf("%d never made a session of its own", pid)
				}
			}
			if held := c.known().Mounts != nil; held != (tc.wrapper != nil) {
				t.Fatalf("the init's mount namespace held: %v", held)
			}

			_ = init.Process.Kill()
			select {
			case <-reported:
			case <-time.After(10 * time.Second):
				t.Fatal("the init's exit was not reported")
			}
			if leftAtExit.State != 0 && !leftAtExit.Exiting() {
				t.Errorf("what the init left (%d) still ran when the exit was reported: %+v", pid, leftAtExit)
			}
			if got := runtimeCalls(calls); got != "" {
				t.Errorf("the runtime was asked to kill: %q", got)
			}
			if c.known().Mounts != nil {
				t.Error("the mount namespace is still held after the init's exit")
			}
		})
	}
}

// A mount namespace the spec has the container join by path (another
// container's) is not held: its processes would be taken for this one's.
func TestSharedMountNamespaceIsNotHeld(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("a mount namespace needs root")
	}
	for _, tc := range []struct {
		spec string
		held bool
	}{
		{`{"process":{"args":["sh"]},"linux":{"namespaces":[{"type":"mount"}]}}`, true},
		{`{"process":{"args":["sh"]},"linux":{"namespaces":[{"type":"mount","path":"/proc/1/ns/mnt"}]}}`, false},
		{`{"process":{"args":["sh"]},"linux":{"namespaces":[{"type":"pid"}]}}`, false},
	} {
		var spec bundleSpec
		if err := json.Unmarshal([]byte(tc.spec), &spec); err != nil {
			t.Fatal(err)
		}
		c, r, _ := newNoCgroupContainer(t)
		c.ownMountNS = hasOwnNamespace(&spec, specs.MountNamespace)
		runInit(t, c, r, []string{"unshare", "--mount", "--propagation", "private"}, "sleep 60")
		if held := c.known().Mounts != nil; held != tc.held {
			t.Errorf("spec %s: mount namespace held %v, want %v", tc.spec, held, tc.held)
		}
		c.releaseMountNS()
	}
}

// A kill with all of a container without a cgroup of its own signals each
// of its processes from /proc: the runtime signals all through the cgroup,
// and fails without one (runc 1.1) or signals the init alone (later runcs).
// A kill without all still goes to the runtime.
func TestKillAllWithoutACgroupSignalsEveryProcess(t *testing.T) {
	c, r, calls := newNoCgroupContainer(t)
	reported := make(chan struct{})
	c.events.Exited = func(*Process, Snapshot) { close(reported) }
	// The init's child says which signal it got (SIGKILL, at the init's
	// exit, leaves no word).
	termed := filepath.Join(t.TempDir(), "termed")
	runInit(t, c, r, nil, `sh -c 'trap "echo TERM > `+termed+`; exit 0" TERM; echo ready > `+termed+`; while :; do sleep 0.05; done'`)
	awaitFile := func(want string) {
		t.Helper()
		var got []byte
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline) && string(got) != want; time.Sleep(5 * time.Millisecond) {
			got, _ = os.ReadFile(termed)
		}
		if string(got) != want {
			t.Fatalf("the init's child says %q, want %q", got, want)
		}
	}
	awaitFile("ready\n") // its handler is set

	if err := c.init.Kill(context.Background(), int(unix.SIGCONT), false); err != nil {
		t.Fatalf("kill without all: %v", err)
	}
	if got := runtimeCalls(calls); got != "kill c 18\n" {
		t.Errorf("kill without all: the runtime was asked %q, want \"kill c 18\"", got)
	}
	// SIGTERM, which the init survives: the child's word is the shim's
	// signal, not the init's exit (which would kill it anyway).
	if err := c.init.Kill(context.Background(), int(unix.SIGTERM), true); err != nil {
		t.Fatalf("kill with all: %v", err)
	}
	awaitFile("TERM\n")
	if err := c.init.Kill(context.Background(), int(unix.SIGKILL), true); err != nil {
		t.Fatalf("kill with all: %v", err)
	}
	select {
	case <-reported:
	case <-time.After(10 * time.Second):
		t.Fatal("the init did not exit")
	}
	if st := c.init.State(); st.ExitCode != 128+int(unix.SIGKILL) {
		t.Errorf("the init exited with %d, want %d (SIGKILL)", st.ExitCode, 128+int(unix.SIGKILL))
	}
	if got := runtimeCalls(calls); got != "kill c 18\n" {
		t.Errorf("kills with all: the runtime was asked %q; want nothing more", got)
	}
	if err := c.init.Kill(context.Background(), int(unix.SIGTERM), true); !errdefs.IsNotFound(err) {
		t.Errorf("kill with all after the exit: %v, want NotFound", err)
	}
}

// The records of exited sessions do not pile up: an exit that left nothing
// adds none, and one whose members are all gone is dropped at the next exit.
func TestExitedSessionRecordsAreDroppedOnceEmpty(t *testing.T) {
	c, _, _ := newNoCgroupContainer(t)
	gone := proctree.Exited{Session: 1 << 22, Members: []proctree.Proc{{Pid: 1<<22 + 1, Start: 1}}}
	self, err := procstat.Read(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	// This test's own session, with this process in it: not gone.
	live := proctree.Exited{Session: self.Session, Members: []proctree.Proc{{Pid: os.Getpid(), Start: self.Start}}}
	c.exitedSessions = []proctree.Exited{gone, live}

	c.keepExitedSession(1<<22 + 2) // no such process: its session has no members
	if !reflect.DeepEqual(c.known().Exited, []proctree.Exited{live}) {
		t.Errorf("records after an exit that left nothing: %+v, want only the live one %+v", c.known().Exited, live)
	}
}

// The records of exited sessions cross an in-place upgrade: the successor
// still lists and kills what the exited processes left.
func TestExitedSessionRecordsCrossAnUpgrade(t *testing.T) {
	records := []proctree.Exited{{Session: 1 << 22, Members: []proctree.Proc{{Pid: 1<<22 + 1, Start: 7}, {Pid: 1<<22 + 2, Start: 8}}}}
	c := &Container{ID: "c", Bundle: t.TempDir(), execs: map[string]*Process{}, initReaped: true, exitedSessions: records}
	c.init = newProcess(c, "", shimio.Config{}, nil)
	c.init.pid, c.init.status, c.init.exitCode, c.init.exitedAt = 1<<30, Stopped, 137, time.Now()

	next, err := Import(reaper.New(), handedOver(t, c), CreateConfig{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := next.known().Exited; !reflect.DeepEqual(got, records) {
		t.Errorf("records after the handover: %+v, want %+v", got, records)
	}
}
