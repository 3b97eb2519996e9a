package process

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containerd/errdefs"

	"github.com/example/containerd-shim-example-v2/cgroup"
	shimio "github.com/example/containerd-shim-example-v2/io"
	"github.com/example/containerd-shim-example-v2/reaper"
)

// Under cgroup v1 the kernel notifies every cgroup below the one whose limit
// was hit (a pod's, the node's), before the kill, which only the victim's
// own cgroup counts. A container whose count does not move and whose own
// limit was not hit reports no OOM kill; one whose count moves after the
// notification reports one; one whose own limit was hit with the victim in a
// cgroup below it reports one once its count has had time to move; a
// deleted container reports nothing; on a kernel that counts no kills the
// notification itself is reported.
func TestV1OOMNotificationNeedsACountedKill(t *testing.T) {
	defer func(d []time.Duration) { oomRecheckAfter = d }(oomRecheckAfter)
	short := []time.Duration{time.Millisecond, 5 * time.Millisecond, 20 * time.Millisecond}
	// A last recheck long after the others: a count written after the
	// notification is found however late this goroutine runs, and a recheck
	// that should have stopped at once is caught running on.
	long := []time.Duration{time.Millisecond, 10 * time.Second}
	root := t.TempDir()
	pod := mkdir(t, filepath.Join(root, "memory", "pod"))
	mem := mkdir(t, filepath.Join(pod, "c"))
	set := func(dir, file, content string) {
		t.Helper()
		replaceFile(t, filepath.Join(dir, file), content)
	}
	setKills := func(line string) { set(mem, "memory.oom_control", "oom_kill_disable 0\nunder_oom 0\n"+line) }
	setKills("oom_kill 0\n")
	set(mem, "memory.failcnt", "0\n")
	set(pod, "memory.failcnt", "0\n")
	cg, err := cgroup.Parse(root, []byte("9:memory:/pod/c\n"), false)
	if err != nil {
		t.Fatal(err)
	}
	reported := make(chan string, 4)
	c := &Container{ID: "c", cg: cg, oomWatcher: &cgroup.OOMWatcher{}}
	c.events.OOM = func(c *Container) { // called with c.mu held
		reported <- fmt.Sprintf("seen %d, below %d", c.oom.seen, c.oom.below)
	}
	c.oom.limitMarks = cg.LimitMarks()
	recheckDone := func() {
		t.Helper()
		waitRecheckEnded(t, c)
	}
	none := func(what string) {
		t.Helper()
		select {
		case r := <-reported:
			t.Fatalf("%s: an OOM kill reported (%s)", what, r)
		default:
		}
	}
	want := func(what, report string) {
		t.Helper()
		select {
		case r := <-reported:
			if r != report {
				t.Errorf("%s: reported with %s, want %s", what, r, report)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("%s: no OOM kill reported", what)
		}
		recheckDone()
	}

	// Another container's OOM under the pod's limit: the pod's limit failed,
	// nothing counted here.
	oomRecheckAfter = short
	set(pod, "memory.failcnt", "1\n")
	c.reportOOM(true)
	recheckDone()
	none("another container's kill under the pod's limit")

	// Its own: notified, counted a moment later.
	oomRecheckAfter = long
	c.reportOOM(true)
	setKills("oom_kill 1\n")
	want("a kill counted after the notification", "seen 1, below 0")

	// Its own limit, the victim in a cgroup below it: no count moves here,
	// the victim's cgroup's does (v1 counts a kill there alone), and its own
	// failure count (which alone moved here before, as reclaim moves it with
	// no kill).
	oomRecheckAfter = short
	set(mem, "memory.failcnt", "4\n")
	set(mkdir(t, filepath.Join(mem, "inner")), "memory.oom_control", "oom_kill_disable 0\nunder_oom 0\noom_kill 1\n")
	c.reportOOM(true)
	want("a kill below the container under its own limit", "seen 1, below 1")

	// Deleted: a recheck finds a kill counted, and reports nothing.
	oomRecheckAfter = long
	c.mu.Lock()
	c.oom.stopped = true
	c.mu.Unlock()
	c.reportOOM(true)
	setKills("oom_kill 2\n")
	recheckDone() // at once: the first recheck ends it
	none("a deleted container")
	c.mu.Lock()
	c.oom.stopped = false
	c.oom.seen = 2
	c.mu.Unlock()

	// A kernel before 4.13: no oom_kill line, the notification is the kill.
	setKills("")
	c.reportOOM(true)
	select {
	case r := <-reported:
		if r != "seen 3, below 1" {
			t.Errorf("reported with %s, want seen 3, below 1", r)
		}
	default:
		t.Error("no OOM kill reported on a kernel that counts none")
	}
}

// waitRecheckEnded waits for c's v1 rechecks (recheckOOM) to end.
func waitRecheckEnded(t *testing.T, c *Container) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(time.Millisecond) {
		c.mu.Lock()
		busy := c.oom.recheck
		c.mu.Unlock()
		if !busy {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the rechecks never ended")
		}
	}
}

// newV1Container returns a container in the fake v1 memory cgroup mem (under
// root) with a 64 MiB limit, no kill counted and its marks taken, as at
// create; its OOM events are reported with the kills counted.
func newV1Container(t *testing.T, root, path string) (c *Container, mem string, reported chan string) {
	t.Helper()
	mem = mkdir(t, filepath.Join(root, "memory", path))
	for file, content := range map[string]string{
		"memory.oom_control":        "oom_kill_disable 0\nunder_oom 0\noom_kill 0\n",
		"memory.failcnt":            "0\n",
		"memory.limit_in_bytes":     "67108864\n",
		"memory.max_usage_in_bytes": "1048576\n",
	} {
		replaceFile(t, filepath.Join(mem, file), content)
	}
	cg, err := cgroup.Parse(root, []byte("9:memory:/"+path+"\n"), false)
	if err != nil {
		t.Fatal(err)
	}
	reported = make(chan string, 8)
	c = &Container{ID: "c", cg: cg, oomWatcher: &cgroup.OOMWatcher{}}
	c.events.OOM = func(c *Container) { reported <- fmt.Sprintf("seen %d, below %d", c.oom.seen, c.oom.below) } // with c.mu held
	c.oom.limitMarks = cg.LimitMarks()
	return c, mem, reported
}

// v1 memory.failcnt counts every charge that met the limit, reclaim ending
// most of them with no kill (a container whose page cache fills its limit
// moves it all the time), and the peak usage stays at the limit once met.
// Such a container, notified of an OOM kill of another container's process
// under the pod's limit (v1 notifies every cgroup below the one whose limit
// failed), lost no process: it reports no OOM kill, whether the pod's
// memory limit failed (its failcnt moves) or its memory+swap limit, equal to
// it (which kernels since 6.x count in no failcnt).
func TestV1OOMOfAnAncestorNotReportedByAContainerAtItsLimit(t *testing.T) {
	defer func(d []time.Duration) { oomRecheckAfter = d }(oomRecheckAfter)
	oomRecheckAfter = []time.Duration{time.Millisecond, 5 * time.Millisecond, 20 * time.Millisecond}
	for _, tc := range []struct{ name, podFailcnt string }{
		{"the pod's memory limit", "3\n"},
		{"the pod's memory+swap limit", "0\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			pod := mkdir(t, filepath.Join(root, "memory", "pod"))
			replaceFile(t, filepath.Join(pod, "memory.failcnt"), "0\n")
			c, mem, reported := newV1Container(t, root, "pod/c")

			// Its page cache met its limit: reclaimed, no kill.
			replaceFile(t, filepath.Join(mem, "memory.failcnt"), "250\n")
			replaceFile(t, filepath.Join(mem, "memory.max_usage_in_bytes"), "67108864\n")
			// The pod's limit fails; another container's process is killed.
			replaceFile(t, filepath.Join(pod, "memory.failcnt"), tc.podFailcnt)
			c.oomNotified()
			waitRecheckEnded(t, c)
			select {
			case r := <-reported:
				t.Fatalf("an OOM kill reported (%s) for a container that lost no process", r)
			default:
			}
		})
	}
}

// The same on this host's kernel (cgroup v1, as root): a pod's cgroup with a
// 32 MiB limit holds containers a (16 MiB limit) and b (none). a's page
// cache fills its limit (its failcnt moves, no kill), then b exceeds the
// pod's limit and is OOM-killed. The kernel notifies a, whose count stays
// 0: a reports nothing.
func TestV1OOMOfASiblingNotReportedByAContainerAtItsLimitOnThisKernel(t *testing.T) {
	if cgroup.Unified(cgroup.DefaultRoot) || os.Geteuid() != 0 {
		t.Skip("needs cgroup v1 and root")
	}
	for _, tc := range []struct {
		name  string
		files []string // the pod's limits, in the order written
	}{
		{"the pod's memory limit", []string{"memory.limit_in_bytes"}},
		{"the pod's memory+swap limit", []string{"memory.limit_in_bytes", "memory.memsw.limit_in_bytes"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			name := fmt.Sprintf("ex-unit-oom-%d-%d", os.Getpid(), len(tc.files))
			pod := newV1MemoryCgroup(t, name)
			a, b := newV1MemoryCgroup(t, name+"/a"), newV1MemoryCgroup(t, name+"/b")
			for _, f := range tc.files {
				writeCgroupFile(t, pod, f, strconv.Itoa(32<<20))
			}
			writeCgroupFile(t, a, "memory.limit_in_bytes", strconv.Itoa(16<<20))
			cg, err := cgroup.Parse(cgroup.DefaultRoot, []byte("9:memory:/"+name+"/a\n"), false)
			if err != nil {
				t.Fatal(err)
			}
			var w cgroup.OOMWatcher
			defer w.Close()
			reported := make(chan string, 16)
			c := &Container{ID: "a", cg: cg, oomWatcher: &w}
			c.events.OOM = func(c *Container) { reported <- c.oom.scope } // with c.mu held
			c.oom.limitMarks = cg.LimitMarks()
			c.watchOOM()
			defer c.stopOOM()

			fill := filepath.Join(t.TempDir(), "fill")
			runInCgroup(t, a, "dd if=/dev/zero of="+fill+" bs=1M count=64 2>/dev/null; rm -f "+fill)
			runInCgroup(t, b, "head -c 200000000 /dev/zero | tail > /dev/null")
			if k, _ := cg.OOMKills(); k != 0 {
				t.Fatalf("a's OOM kill count %d: the kernel killed in a", k)
			}
			time.Sleep(1500 * time.Millisecond) // past the last recheck's delay
			waitRecheckEnded(t, c)
			select {
			case scope := <-reported:
				t.Fatalf("an OOM kill reported for a (limit %q): b's process was killed, under the pod's limit", scope)
			default:
			}
		})
	}
}

// newV1MemoryCgroup makes the v1 memory cgroup path (skipping the test where
// none can be made), removed at the end of the test, however it ends.
func newV1MemoryCgroup(t *testing.T, path string) string {
	t.Helper()
	dir := filepath.Join(cgroup.DefaultRoot, "memory", path)
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Skipf("cannot make a memory cgroup here: %v", err)
	}
	t.Cleanup(func() {
		// Its processes have exited, but their last charges may take a
		// moment to go.
		var err error
		for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
			if err = os.Remove(dir); err == nil || os.IsNotExist(err) {
				return
			}
		}
		t.Errorf("cgroup %s left behind: %v", dir, err)
	})
	return dir
}

// writeCgroupFile writes one value to a cgroup's file.
func writeCgroupFile(t *testing.T, dir, file, value string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, file), []byte(value), 0); err != nil {
		t.Fatal(err)
	}
}

// runInCgroup runs a shell script in the cgroup dir, to its end (an OOM kill
// of it included).
func runInCgroup(t *testing.T, dir, script string) {
	t.Helper()
	out, err := exec.Command("sh", "-c", "echo $$ > "+dir+"/cgroup.procs; "+script).CombinedOutput()
	t.Logf("in %s: %v %s", filepath.Base(dir), err, out)
}

// One v1 OOM kill comes with many notifications: the kernel notifies at each
// OOM attempt, and charges go on failing (and notifying) while the victim
// exits. A notification after the kill was reported, with no kill of its
// own, reports nothing: the container's limit counters still show the limit
// met, and reported the kill again as one below the container.
func TestV1LateOOMNotificationReportsNoKillTwice(t *testing.T) {
	defer func(d []time.Duration) { oomRecheckAfter = d }(oomRecheckAfter)
	oomRecheckAfter = []time.Duration{time.Millisecond, 5 * time.Millisecond, 20 * time.Millisecond}
	c, mem, reported := newV1Container(t, t.TempDir(), "c")

	// The kill under its own limit, counted by the time of the notification.
	replaceFile(t, filepath.Join(mem, "memory.failcnt"), "40\n")
	replaceFile(t, filepath.Join(mem, "memory.max_usage_in_bytes"), "67108864\n")
	replaceFile(t, filepath.Join(mem, "memory.oom_control"), "oom_kill_disable 0\nunder_oom 0\noom_kill 1\n")
	c.oomNotified()
	if r := <-reported; r != "seen 1, below 0" {
		t.Fatalf("the kill reported with %s, want seen 1, below 0", r)
	}
	c.oomNotified() // the same OOM's later notification
	waitRecheckEnded(t, c)
	select {
	case r := <-reported:
		t.Fatalf("one OOM kill reported a second time (%s)", r)
	default:
	}
}

// With the systemd cgroup driver, a container's cgroup is a scope that
// systemd removes as soon as it is empty: when the init dies, its OOM
// count goes with it. The exit path reads the count as soon as the init is
// reaped, before the kill of the container's other processes and the wait
// for its execs that give systemd time to remove it (here the runtime's
// kill removes it). A notification that arrives after the reap but before
// the exit is recorded is reported too; one after it is not.
func TestOOMKillOfAnInitWhoseCgroupGoesWithIt(t *testing.T) {
	root := t.TempDir()
	if err := os.WriteFile(filepath.Join(root, "cgroup.controllers"), []byte("memory\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	scope := mkdir(t, filepath.Join(root, "system.slice", "c.scope"))
	setKills := func(n int) {
		t.Helper()
		_ = os.MkdirAll(scope, 0o755)
		if err := os.WriteFile(filepath.Join(scope, "memory.events"), fmt.Appendf(nil, "oom %d\noom_kill %d\n", n, n), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	setKills(0)
	cg, err := cgroup.Parse(root, []byte("0::/system.slice/c.scope\n"), true)
	if err != nil {
		t.Fatal(err)
	}
	newContainer := func(t *testing.T) (*Container, *[]string) {
		dir := t.TempDir()
		t.Setenv("SCOPE", scope)
		rt, _ := fakeRuntime(t, dir, `
kill) rm -rf "$SCOPE"; exit 0;;`)
		c := &Container{ID: "c", Bundle: dir, rt: rt, cg: cg, execs: map[string]*Process{}}
		c.execsIdle = sync.NewCond(&c.mu)
		c.init = newProcess(c, "", shimio.Config{}, nil)
		c.init.pid, c.init.status = 1<<22, Running // never signalled: the fake runtime kills
		var events []string
		c.events.OOM = func(*Container) { events = append(events, "oom") } // with c.mu held
		c.events.Exited = func(*Process, Snapshot) { c.mu.Lock(); events = append(events, "exit"); c.mu.Unlock() }
		return c, &events
	}

	t.Run("read at the reap", func(t *testing.T) {
		setKills(0)
		c, events := newContainer(t)
		setKills(1) // the init is OOM-killed; no notification yet
		c.initExited(reaper.Exit{Pid: c.init.pid, Status: 137, Time: time.Now()})
		if got := strings.Join(*events, ","); got != "oom,exit" {
			t.Errorf("events %q, want oom,exit", got)
		}
	})
	t.Run("notified after the reap", func(t *testing.T) {
		setKills(0)
		c, events := newContainer(t)
		c.mu.Lock()
		c.initReaped = true // the reap read 0: the count rises only now
		c.mu.Unlock()
		setKills(1)
		c.oomNotified()
		_ = os.RemoveAll(scope)
		c.reportOOMBeforeExit()
		c.mu.Lock()
		c.exitRecorded = true
		c.mu.Unlock()
		setKills(2)
		c.oomNotified() // after the exit: not reported
		if got := strings.Join(*events, ","); got != "oom" {
			t.Errorf("events %q, want one oom", got)
		}
	})
}

// A v1 init OOM-killed under its own limit: its notification starts a
// recheck, then the exit path's read at the reap finds the counted kill and
// reports it. The recheck, which goes on until the exit is recorded (the
// wait for execs can take seconds), must end there: looking on, it found no
// new kill and counted the same one again as a kill below the container.
func TestV1OOMRecheckEndsWhenTheKillIsReportedElsewhere(t *testing.T) {
	defer func(d []time.Duration) { oomRecheckAfter = d }(oomRecheckAfter)
	oomRecheckAfter = []time.Duration{20 * time.Millisecond, 50 * time.Millisecond, 100 * time.Millisecond}
	root := t.TempDir()
	mem := mkdir(t, filepath.Join(root, "memory", "c"))
	write := func(file, content string) {
		t.Helper()
		replaceFile(t, filepath.Join(mem, file), content)
	}
	write("memory.oom_control", "oom_kill_disable 0\nunder_oom 0\noom_kill 0\n")
	write("memory.failcnt", "0\n")
	write("memory.limit_in_bytes", "67108864\n")
	write("memory.max_usage_in_bytes", "1048576\n")
	cg, err := cgroup.Parse(root, []byte("4:memory:/c\n"), false)
	if err != nil {
		t.Fatal(err)
	}
	reports := make(chan string, 4)
	c := &Container{ID: "c", cg: cg, oomWatcher: &cgroup.OOMWatcher{}}
	c.events.OOM = func(c *Container) { reports <- fmt.Sprintf("seen %d below %d", c.oom.seen, c.oom.below) }
	c.oom.limitMarks = cg.LimitMarks()

	c.oomNotified() // no kill counted yet: the recheck begins
	write("memory.failcnt", "7\n")
	write("memory.max_usage_in_bytes", "67108864\n") // the peak at the limit: its own
	write("memory.oom_control", "oom_kill_disable 0\nunder_oom 0\noom_kill 1\n")
	c.mu.Lock()
	c.initReaped = true
	c.mu.Unlock()
	c.reportOOMBeforeExit() // the read at the reap
	if r := <-reports; r != "seen 1 below 0" {
		t.Fatalf("the exit path reported %q", r)
	}
	select {
	case r := <-reports:
		t.Fatalf("the kill was reported a second time (%s)", r)
	case <-time.After(500 * time.Millisecond): // the recheck's delays are over
	}
}

// replaceFile gives a fake cgroup file new content in one step (a new file
// renamed over it), as the kernel's files read: a recheck running meanwhile
// must not read the empty file os.WriteFile leaves between its truncation
// and its write, which reads as a kernel that counts no kills, or a cgroup
// gone, and ended the recheck (a flake seen under load).
func replaceFile(t *testing.T, path, content string) {
	t.Helper()
	tmp := path + ".new"
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// A container the runtime made no cgroup for (a rootless runtime without a
// delegated cgroup) is left in the shim's own cgroup: that cgroup is not the
// container's, so it gets none (NotFound: no stats, no OOM watching). A
// process in a cgroup of its own gets that one (as root: the test makes one).
func TestContainerCgroupIsNeverTheShimsOwn(t *testing.T) {
	child := exec.Command("sleep", "60")
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = child.Process.Kill(); _ = child.Wait() }()
	if cg, err := containerCgroup(child.Process.Pid); !errdefs.IsNotFound(err) {
		t.Fatalf("a process in the shim's own cgroup: %v, %v; want NotFound", cg, err)
	}

	if os.Geteuid() != 0 {
		t.Skip("moving a process to a cgroup of its own needs root")
	}
	dir := filepath.Join(cgroup.DefaultRoot, "ex-unit-"+strconv.Itoa(os.Getpid()))
	if !cgroup.Unified(cgroup.DefaultRoot) {
		dir = filepath.Join(cgroup.DefaultRoot, "memory", "ex-unit-"+strconv.Itoa(os.Getpid()))
	}
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Skipf("cannot make a cgroup here: %v", err)
	}
	defer func() {
		_ = child.Process.Kill()
		_ = child.Wait()
		_ = os.Remove(dir)
	}()
	if err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(strconv.Itoa(child.Process.Pid)), 0); err != nil {
		t.Fatalf("move the child into %s: %v", dir, err)
	}
	cg, err := containerCgroup(child.Process.Pid)
	if err != nil {
		t.Fatalf("a process in a cgroup of its own: %v", err)
	}
	if got := cg.Dir("memory"); got != dir {
		t.Errorf("its memory cgroup is %s, want %s", got, dir)
	}
}

// Cgroup v1 with the OOM killer disabled in the container's own cgroup
// (docker run --oom-kill-disable): a notification while the cgroup is under
// OOM is reported at once, though no kill is counted (none will be: the
// processes wait for memory), as the stock shim reports it; dockerd makes it
// an "oom" event. Under OOM with the killer enabled, the notification still
// waits for a counted kill, and no kill is taken as seen.
func TestV1OOMNotificationWithKillerDisabled(t *testing.T) {
	defer func(d []time.Duration) { oomRecheckAfter = d }(oomRecheckAfter)
	oomRecheckAfter = []time.Duration{time.Millisecond}
	root := t.TempDir()
	mem := mkdir(t, filepath.Join(root, "memory", "c"))
	replaceFile(t, filepath.Join(mem, "memory.failcnt"), "0\n")
	cg, err := cgroup.Parse(root, []byte("9:memory:/c\n"), false)
	if err != nil {
		t.Fatal(err)
	}
	reported := make(chan uint64, 4)
	c := &Container{ID: "c", cg: cg, oomWatcher: &cgroup.OOMWatcher{}}
	c.events.OOM = func(c *Container) { reported <- c.oom.seen }
	c.oom.limitMarks = cg.LimitMarks()

	replaceFile(t, filepath.Join(mem, "memory.oom_control"), "oom_kill_disable 0\nunder_oom 1\noom_kill 0\n")
	c.reportOOM(true)
	waitRecheckEnded(t, c)
	select {
	case seen := <-reported:
		t.Fatalf("killer enabled, no kill counted: reported (seen %d)", seen)
	default:
	}

	replaceFile(t, filepath.Join(mem, "memory.oom_control"), "oom_kill_disable 1\nunder_oom 1\noom_kill 0\n")
	c.reportOOM(true)
	select {
	case seen := <-reported:
		if seen != 0 {
			t.Errorf("killer disabled: reported with %d kills seen, want 0 (no kill happened)", seen)
		}
	default:
		t.Fatal("killer disabled, cgroup under OOM: the notification was not reported")
	}
}
