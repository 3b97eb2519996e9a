package cgroup

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

// A warming moves a process into the cgroup it is in: afterwards it
// is still there, in every hierarchy, and nothing else moved.
func TestWarmLeavesTheProcessWhereItWas(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("moving a process between cgroups needs root")
	}
	path := fmt.Sprintf("/warm-test-%d", os.Getpid())
	dirs := makeTestCgroup(t, path)
	cmd := exec.Command("sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	if err := AddProcess(DefaultRoot, path, cmd.Process.Pid); err != nil {
		t.Fatal(err)
	}
	before := readFile(t, fmt.Sprintf("/proc/%d/cgroup", cmd.Process.Pid))
	self := readFile(t, "/proc/self/cgroup")

	w := &MigrationWarmer{}
	w.Kick(func() error { return AddProcess(DefaultRoot, path, cmd.Process.Pid) })
	waitWarmed(t, w, 1)
	if after := readFile(t, fmt.Sprintf("/proc/%d/cgroup", cmd.Process.Pid)); after != before {
		t.Errorf("the process's cgroups changed:\n%s\nwant\n%s", after, before)
	}
	if got := readFile(t, "/proc/self/cgroup"); got != self {
		t.Errorf("the test's own cgroups changed:\n%s\nwant\n%s", got, self)
	}
	for _, d := range dirs {
		if got := strings.TrimSpace(readFile(t, filepath.Join(d, "cgroup.procs"))); got != fmt.Sprint(cmd.Process.Pid) {
			t.Errorf("%s holds %q, want the process alone", d, got)
		}
	}
	// A process that is gone: an error, and no warming counted.
	if err := w.Warm(func() error { return AddProcess(DefaultRoot, path, 1<<30) }); err == nil {
		t.Error("Warm of a pid that cannot exist: no error")
	}
	if w.Warmed() != 1 {
		t.Errorf("Warmed() = %d, want 1", w.Warmed())
	}
	var off *MigrationWarmer
	off.Kick(func() error { panic("a nil warmer ran a warming") }) // nil is off
}

// makeTestCgroup makes path in the unified tree or in every v1 hierarchy
// that takes processes without setup (not cpuset), and removes it at the end.
func makeTestCgroup(t *testing.T, path string) []string {
	t.Helper()
	var dirs []string
	if Unified(DefaultRoot) {
		dirs = []string{filepath.Join(DefaultRoot, path)}
	} else {
		for _, h := range []string{"memory", "pids"} {
			if _, err := os.Stat(filepath.Join(DefaultRoot, h)); err == nil {
				dirs = append(dirs, filepath.Join(DefaultRoot, h, path))
			}
		}
	}
	for _, d := range dirs {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			for i := 0; i < 50 && os.Remove(d) != nil; i++ {
				time.Sleep(20 * time.Millisecond)
			}
		})
	}
	return dirs
}

func readFile(t *testing.T, name string) string {
	t.Helper()
	data, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

// Moving the calling thread into the cgroup it is in (KickOwnThread's
// migration) leaves it, and the rest of the process, where they were; a root
// with no cgroup filesystem is an error.
func TestOwnThreadMoveChangesNothing(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("moving a thread between cgroups needs root")
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	thread := readFile(t, "/proc/thread-self/cgroup")
	process := readFile(t, "/proc/self/cgroup")
	file, err := ownThreadFile(DefaultRoot)
	if err != nil {
		t.Fatal(err)
	}
	if err := moveThreadInto(file); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, "/proc/thread-self/cgroup"); got != thread {
		t.Errorf("the thread's cgroups changed:\n%s\nwant\n%s", got, thread)
	}
	if got := readFile(t, "/proc/self/cgroup"); got != process {
		t.Errorf("the process's cgroups changed:\n%s\nwant\n%s", got, process)
	}
	if file, err := ownThreadFile(t.TempDir()); err == nil {
		if err := moveThreadInto(file); err == nil {
			t.Error("a move with no cgroup filesystem: no error")
		}
	}
}

// waitWarmed waits until w has completed n warmings.
func waitWarmed(t *testing.T, w *MigrationWarmer, n uint64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for w.Warmed() < n {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d warmings completed (own thread file %q, error %v)", w.Warmed(), n, w.ownFile, w.ownErr)
		}
		time.Sleep(time.Millisecond)
	}
}

// KickOwnThread warms again and again with the file it found once, and
// leaves the process where it was; a nil warmer is off.
func TestKickOwnThreadWarms(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("moving a thread between cgroups needs root")
	}
	process := readFile(t, "/proc/self/cgroup")
	var w MigrationWarmer
	for i := uint64(1); i <= 3; i++ {
		w.KickOwnThread(DefaultRoot)
		waitWarmed(t, &w, i)
	}
	if got := readFile(t, "/proc/self/cgroup"); got != process {
		t.Errorf("the process's cgroups changed:\n%s\nwant\n%s", got, process)
	}
	var off *MigrationWarmer
	off.KickOwnThread(DefaultRoot)
	if off.Warmed() != 0 {
		t.Error("a nil warmer warmed")
	}
}

// Running is true exactly while a warming is under way, and a Kick then
// starts no second one: what a reader of the introspection waits on before
// it counts the next warming.
func TestRunningWhileAWarmingIsUnderWay(t *testing.T) {
	w := &MigrationWarmer{}
	if w.Running() {
		t.Fatal("Running before any warming")
	}
	release := make(chan struct{})
	started := make(chan struct{})
	w.Kick(func() error { close(started); <-release; return nil })
	<-started
	if !w.Running() {
		t.Error("not Running while the warming's move is under way")
	}
	w.Kick(func() error { panic("a second warming ran beside the first") })
	close(release)
	deadline := time.Now().Add(5 * time.Second)
	for w.Running() {
		if time.Now().After(deadline) {
			t.Fatal("still Running 5 s after the move returned")
		}
		time.Sleep(time.Millisecond)
	}
	if w.Warmed() != 1 {
		t.Errorf("Warmed() = %d after one warming, want 1", w.Warmed())
	}
	var off *MigrationWarmer
	if off.Running() {
		t.Error("a nil warmer is Running")
	}
}
