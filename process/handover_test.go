package process

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/containerd/errdefs"

	"github.com/example/containerd-shim-example-v2/cgroup"
	shimio "github.com/example/containerd-shim-example-v2/io"
	"github.com/example/containerd-shim-example-v2/oomlog"
	"github.com/example/containerd-shim-example-v2/oomlog/oomlogtest"
	cgroupv2 "github.com/example/containerd-shim-example-v2/proto/cgroups/cgroup2/stats"
	"github.com/example/containerd-shim-example-v2/proto/codec"
	"github.com/example/containerd-shim-example-v2/reaper"
)

// noFDs hands over nothing: the container below has no descriptors.
type noFDs struct{ shimio.FDKeeper }

func (noFDs) KeepRaw(int, string) (int, error) { panic("no descriptor to keep") }

// A stopped container crosses an upgrade (Export, the state as JSON,
// Import) with its cgroup, so Stats still reads it, and with the OOM scope's
// marks and the kills counted below it; the layout 2 state, without them,
// leaves a stopped container without a cgroup, as before.
func TestStoppedContainerKeepsItsCgroupAcrossAHandover(t *testing.T) {
	dir := t.TempDir()
	cg, err := cgroup.FromState(cgroup.DefaultRoot, cgroup.State{Dirs: map[string]string{"memory": dir + "/memory", "cpu": dir + "/cpu"}})
	if err != nil {
		t.Fatal(err)
	}
	c := &Container{ID: "c", Bundle: dir, execs: map[string]*Process{}, initReaped: true, cg: cg, oom: oomState{below: 2, scope: cgroup.OOMScopeContainer,
		limitMarks: cgroup.LimitMarks{OwnFailures: 5, AtLimit: true, Ancestors: map[string]uint64{"/sys/fs/cgroup/memory/kubepods": 9}}}}
	c.init = newProcess(c, "", shimio.Config{}, nil)
	c.init.pid, c.init.status, c.init.exitCode, c.init.exitedAt = 1<<30, Stopped, 137, time.Now()

	back := handedOver(t, c)
	next, err := Import(reaper.New(), back, CreateConfig{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if next.cg == nil || next.cg.Dir("memory") != dir+"/memory" || next.cg.Dir("cpu") != dir+"/cpu" {
		t.Fatalf("cgroup after the handover: %+v, want the container's", next.cg)
	}
	if !reflect.DeepEqual(next.oom.limitMarks, c.oom.limitMarks) || next.oom.below != 2 || next.oom.scope != c.oom.scope {
		t.Errorf("OOM state after the handover: marks %+v below %d scope %q, want %+v 2 %q",
			next.oom.limitMarks, next.oom.below, next.oom.scope, c.oom.limitMarks, c.oom.scope)
	}
	if s := next.Init().State(); s.Status != Stopped || s.ExitCode != 137 {
		t.Errorf("init after the handover: %+v", s)
	}

	back.Cgroup, back.LimitMarks = nil, nil // what a layout 2 binary hands over
	if old, err := Import(reaper.New(), back, CreateConfig{}, nil); err != nil || old.cg != nil {
		t.Errorf("a layout 2 state of a stopped container: cgroup %+v (%v), want none", old.cg, err)
	}
}

// A v1 OOM notification whose kill the kernel had not counted yet when the
// daemon was upgraded: the predecessor was looking for it (recheckOOM), and
// the successor looks on, so a kill counted after the switch is reported.
func TestV1OOMRecheckGoesOnAcrossAHandover(t *testing.T) {
	defer func(d []time.Duration) { oomRecheckAfter = d }(oomRecheckAfter)
	oomRecheckAfter = []time.Duration{time.Millisecond, 20 * time.Millisecond, time.Second}
	root := t.TempDir()
	mem := mkdir(t, filepath.Join(root, "memory", "c"))
	setKills := func(n int) {
		t.Helper()
		replaceFile(t, filepath.Join(mem, "memory.oom_control"), fmt.Sprintf("oom_kill_disable 0\nunder_oom 0\noom_kill %d\n", n))
	}
	setKills(0)
	for _, f := range []string{"memory.failcnt", "cgroup.event_control"} {
		if err := os.WriteFile(filepath.Join(mem, f), []byte("0\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cg, err := cgroup.FromState(root, cgroup.State{Dirs: map[string]string{"memory": mem}})
	if err != nil {
		t.Fatal(err)
	}
	sleeper := exec.Command("sleep", "100")
	if err := sleeper.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { sleeper.Process.Kill(); sleeper.Wait() }()

	c := &Container{ID: "c", Bundle: t.TempDir(), execs: map[string]*Process{}, cg: cg, oom: oomState{recheck: true}}
	c.init = newProcess(c, "", shimio.Config{}, nil)
	c.init.pid, c.init.status = sleeper.Process.Pid, Running
	back := handedOver(t, c)
	reported := make(chan uint64, 2)
	var w cgroup.OOMWatcher
	defer w.Close()
	cfg := CreateConfig{OOM: &w}
	cfg.Events.OOM = func(c *Container) { reported <- c.oom.seen } // with c.mu held
	if _, err := Import(reaper.New(), back, cfg, nil); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond) // the successor's first rechecks found nothing
	setKills(1)                       // the kernel counts the kill only now
	select {
	case n := <-reported:
		if n != 1 {
			t.Errorf("reported with %d kills seen, want 1", n)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("the kill counted after the switch was never reported")
	}
}

// Under v2 the OOM scope's marks count the failed limits below the
// container (memory.events "oom"); 0 is a count like any other. A kill
// under a limit inside the container during the switch is still told apart
// after it. A layout 3 state has no such count: today's is taken instead.
func TestV2OOMScopeMarksAcrossAHandover(t *testing.T) {
	dir := t.TempDir()
	events := func(tree, local int) {
		t.Helper()
		for file, n := range map[string]int{"memory.events": tree, "memory.events.local": local} {
			if err := os.WriteFile(filepath.Join(dir, file), fmt.Appendf(nil, "low 0\nhigh 0\nmax 0\noom %d\noom_kill %d\n", n, n), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	events(0, 0)
	cg, err := cgroup.FromState(cgroup.DefaultRoot, cgroup.State{V2: true, Dirs: map[string]string{"": dir}})
	if err != nil {
		t.Fatal(err)
	}
	c := &Container{ID: "c", Bundle: dir, execs: map[string]*Process{}, initReaped: true, cg: cg, oom: oomState{limitMarks: cg.LimitMarks()}}
	c.init = newProcess(c, "", shimio.Config{}, nil)
	c.init.pid, c.init.status = 1<<30, Stopped
	back := handedOver(t, c)
	events(1, 0) // during the switch: a limit inside the container fails
	next, err := Import(reaper.New(), back, CreateConfig{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if scope, _ := next.cg.OOMScope(next.oom.limitMarks); scope != cgroup.OOMScopeBelow {
		t.Errorf("a kill below during the switch reads as %q after it, want %q", scope, cgroup.OOMScopeBelow)
	}

	back.SubtreeMarked = false // what a layout 3 binary hands over
	back.LimitMarks.Subtree = 0
	old, err := Import(reaper.New(), back, CreateConfig{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if old.oom.limitMarks.Subtree != 1 {
		t.Errorf("a layout 3 state's marks count %d limits failed below, want today's 1", old.oom.limitMarks.Subtree)
	}
}

// A stopped container whose scope systemd removed with its init keeps its
// Stats across an upgrade: the memory.events last read and the kill
// counted by the parent, as before the switch, not NotFound.
func TestRemovedScopeStatsAcrossAHandover(t *testing.T) {
	s := newSystemdScope(t)
	writeEvents(t, s.scope, "max 0\noom 0\noom_kill 0\n")
	writeEvents(t, s.slice, "max 0\noom 0\noom_kill 4\n")
	c, _ := newScopeContainer(t, s, nil)
	writeEvents(t, s.scope, "max 1\noom 0\noom_kill 0\n")
	c.oomNotified()
	writeEvents(t, s.slice, "max 0\noom 0\noom_kill 5\n")
	if err := os.RemoveAll(s.scope); err != nil {
		t.Fatal(err)
	}
	c.initExited(reaper.Exit{Pid: c.init.pid, Status: 137, Time: time.Now()})
	stats := func(c *Container) string {
		data, url, err := c.Stats()
		if err != nil {
			return fmt.Sprintf("error %v", err)
		}
		var m cgroupv2.Metrics
		if err := codec.Unmarshal(data, &m); err != nil {
			t.Fatal(err)
		}
		ev := m.GetMemoryEvents()
		return fmt.Sprintf("%s oom_kill %d max %d", url, ev.GetOomKill(), ev.GetMax())
	}
	before := stats(c)
	if want := cgroup.MetricsV2 + " oom_kill 1 max 1"; before != want {
		t.Fatalf("Stats before the handover: %s, want %s", before, want)
	}
	next, err := Import(reaper.New(), handedOver(t, c), CreateConfig{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if after := stats(next); after != before {
		t.Errorf("Stats after the handover: %s, want %s as before it", after, before)
	}
}

// An OOM kill during the switch of a container whose scope systemd then
// removed is reported once, before the exit, by the successor: found in
// the kernel's log after the predecessor's mark, or, without a log, by the
// parent's count against the one the predecessor last read, the limit met
// within oomRemovedWindow.
func TestOOMKillOfARemovedScopeDuringTheSwitch(t *testing.T) {
	for _, withLog := range []bool{false, true} {
		t.Run(fmt.Sprintf("kernel log %v", withLog), func(t *testing.T) {
			s := newSystemdScope(t)
			writeEvents(t, s.scope, "max 0\noom 0\noom_kill 0\n")
			writeEvents(t, s.slice, "max 0\noom 0\noom_kill 4\n")
			var k *oomlogtest.Kernel
			var log *oomlog.Log
			if withLog {
				k = oomlogtest.New(t)
				log = k.Log
			}
			c, _ := newScopeContainer(t, s, log)
			writeEvents(t, s.scope, "max 1\noom 0\noom_kill 0\n")
			c.oomNotified()
			back := handedOver(t, c)
			if k != nil {
				k.OOMKill(scopeInitPid, "/pod.slice/c.scope", "/pod.slice/c.scope", true)
			}
			writeEvents(t, s.slice, "max 0\noom 0\noom_kill 5\n")
			if err := os.RemoveAll(s.scope); err != nil {
				t.Fatal(err)
			}
			var events []string
			var mu sync.Mutex
			cfg := CreateConfig{OOMLog: log}
			cfg.Events.OOM = func(*Container) { mu.Lock(); events = append(events, "oom"); mu.Unlock() }
			cfg.Events.Exited = func(*Process, Snapshot) { mu.Lock(); events = append(events, "exit"); mu.Unlock() }
			next, err := Import(reaper.New(), back, cfg, nil)
			if err != nil {
				t.Fatal(err)
			}
			next.initExited(reaper.Exit{Pid: scopeInitPid, Status: 137, Time: time.Now()})
			mu.Lock()
			defer mu.Unlock()
			if got := fmt.Sprint(events); got != "[oom exit]" {
				t.Errorf("events after the switch %s, want [oom exit]", got)
			}
		})
	}
}

// handedOver is c as a successor reads it: exported, through JSON.
func handedOver(t *testing.T, c *Container) ContainerState {
	t.Helper()
	st, err := c.Export(noFDs{})
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	var back ContainerState
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	return back
}

// The container's stall_timeout option crosses an upgrade, for the execs
// started after it ("never" too); the successor's own view of containerd
// takes the place of the predecessor's. A layout 4 state has no option:
// its execs get the default.
func TestStallTimeoutAcrossAHandover(t *testing.T) {
	for _, timeout := range []time.Duration{42 * time.Second, -1} {
		c := &Container{ID: "c", Bundle: t.TempDir(), execs: map[string]*Process{}, initReaped: true,
			stall: stallConfig{timeout: timeout}}
		c.init = newProcess(c, "", shimio.Config{}, nil)
		c.init.pid, c.init.status, c.init.exitCode, c.init.exitedAt = 1<<30, Stopped, 0, time.Now()

		down := func() (bool, time.Time) { return true, time.Time{} }
		next, err := Import(reaper.New(), handedOver(t, c), CreateConfig{ReaderOwner: down}, nil)
		if err != nil {
			t.Fatal(err)
		}
		env := next.ioEnv("exec-after")
		if env.StallTimeout != timeout || env.ReaderOwner == nil {
			t.Fatalf("an exec's stdio after the handover: stall timeout %v, reader's owner known %v; want %v and the successor's", env.StallTimeout, env.ReaderOwner != nil, timeout)
		}
		if isDown, _ := env.ReaderOwner(); !isDown {
			t.Error("an exec's stdio after the handover does not ask the successor about containerd")
		}
	}

	// What a layout 4 binary hands over: the same JSON without the key.
	c := &Container{ID: "c", Bundle: t.TempDir(), execs: map[string]*Process{}, initReaped: true}
	c.init = newProcess(c, "", shimio.Config{}, nil)
	c.init.pid, c.init.status, c.init.exitedAt = 1<<30, Stopped, time.Now()
	st, err := c.Export(noFDs{})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(st)
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(b, &fields); err != nil {
		t.Fatal(err)
	}
	delete(fields, "stallTimeout")
	b, _ = json.Marshal(fields)
	var v4 ContainerState
	if err := json.Unmarshal(b, &v4); err != nil {
		t.Fatal(err)
	}
	old, err := Import(reaper.New(), v4, CreateConfig{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if d := old.ioEnv("exec-after").StallTimeout; d != 0 {
		t.Errorf("a layout 4 state: an exec's stall timeout %v, want the default (0)", d)
	}
}

// A Wait on a process that leaves its container (its own Delete, or its
// container's) can be answered by this binary only: the next one would not
// know the process and would answer NotFound. Until those answers are out,
// an upgrade waits: the container is not handable, nor, once deleted,
// forgettable; an exec killed at its container's delete owes its answer
// until its exit has come and been answered.
func TestAnUpgradeWaitsForTheWaitsOfProcessesThatLeft(t *testing.T) {
	c := &Container{ID: "c", Bundle: t.TempDir(), execs: map[string]*Process{}}
	c.execsIdle = sync.NewCond(&c.mu)
	c.init = newProcess(c, "", shimio.Config{}, nil)
	c.init.status = Running
	add := func(id string) *Process {
		p := newProcess(c, id, shimio.Config{}, nil)
		c.execs[id] = p
		return p
	}
	// slowWait registers a waiter whose answer is written only once let
	// is called.
	slowWait := func(p *Process) (let func()) {
		gate := make(chan struct{})
		p.OnExit(func(Snapshot) { <-gate })
		return func() { close(gate) }
	}
	owes := func(what string, check func() error) {
		t.Helper()
		if err := check(); !errdefs.IsFailedPrecondition(err) {
			t.Fatalf("%s: %v, want FailedPrecondition", what, err)
		}
	}
	settles := func(what string, check func() error) {
		t.Helper()
		for deadline := time.Now().Add(5 * time.Second); check() != nil; time.Sleep(time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%s after the answers: %v", what, check())
			}
		}
	}

	// An exec deleted before it ran (its Start failed), its Wait answered at
	// the delete.
	failed := add("failed")
	let := slowWait(failed)
	if err := failed.Delete(context.Background(), func(Snapshot) {}); err != nil {
		t.Fatal(err)
	}
	owes("Handable while a deleted exec's Wait is being answered", c.Handable)
	let()
	settles("Handable", c.Handable)

	// The container's delete: an exec created and not started, released at
	// once, and a running one, killed; its exit comes later.
	created, running := add("created"), add("running")
	child := exec.Command("sleep", "100")
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	running.pid, running.status = child.Process.Pid, Running
	c.runningExecs = 1
	letCreated, letRunning := slowWait(created), slowWait(running)
	c.releaseExecs()
	_ = child.Wait() // the kill
	owes("Forgettable with an answer being written and an exit to come", c.Forgettable)
	letCreated()
	owes("Forgettable with an exit to come", c.Forgettable)
	running.execExited(reaper.Exit{Pid: running.pid, Status: 137, Time: time.Now()})
	owes("Forgettable while the killed exec's Wait is being answered", c.Forgettable)
	letRunning()
	settles("Forgettable", c.Forgettable)
}

// A Wait that reached a process before it left (its lookup done) can
// register only after the Delete, or the container's, lets go of the
// process's lock, which it holds while the output drains: behind the
// answers counted then, or once the exit has fired. Its answer is owed as
// well: an upgrade waits for it.
func TestAnUpgradeWaitsForAWaitRegisteredAfterTheLeaving(t *testing.T) {
	c := &Container{ID: "c", Bundle: t.TempDir(), execs: map[string]*Process{}}
	c.execsIdle = sync.NewCond(&c.mu)
	c.init = newProcess(c, "", shimio.Config{}, nil)
	c.init.status = Running
	slowWait := func(p *Process) (let func()) {
		gate := make(chan struct{})
		p.OnExit(func(Snapshot) { <-gate })
		return func() { close(gate) }
	}
	settles := func(what string, check func() error) {
		t.Helper()
		for deadline := time.Now().Add(5 * time.Second); check() != nil; time.Sleep(time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%s after the answers: %v", what, check())
			}
		}
	}

	// Killed at the container's delete, its exit to come.
	running := newProcess(c, "running", shimio.Config{}, nil)
	c.execs[running.ID] = running
	child := exec.Command("sleep", "100")
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	running.pid, running.status = child.Process.Pid, Running
	c.runningExecs = 1
	c.releaseExecs()
	_ = child.Wait()
	let := slowWait(running) // after the release
	running.execExited(reaper.Exit{Pid: running.pid, Status: 137, Time: time.Now()})
	time.Sleep(50 * time.Millisecond) // the callbacks before it have run
	if err := c.Forgettable(); !errdefs.IsFailedPrecondition(err) {
		t.Fatalf("Forgettable while a Wait registered after the release is being answered: %v, want FailedPrecondition", err)
	}
	let()
	settles("Forgettable", c.Forgettable)

	// Deleted, its waiters fired: a late Wait is answered on its own.
	gone := newProcess(c, "gone", shimio.Config{}, nil)
	c.execs[gone.ID] = gone
	if err := gone.Delete(context.Background(), func(Snapshot) {}); err != nil {
		t.Fatal(err)
	}
	let = slowWait(gone)
	if err := c.Handable(); !errdefs.IsFailedPrecondition(err) {
		t.Fatalf("Handable while a Wait registered after the delete is being answered: %v, want FailedPrecondition", err)
	}
	let()
	settles("Handable", c.Handable)
}

// The usual order: the process exits, which starts its Waits' answers on
// their way, and the Delete comes while one is still being written (CRI
// deletes on the exit event, not on its Wait). That answer is owed too: the
// next binary would answer the Wait NotFound.
func TestAnUpgradeWaitsForAnAnswerInFlightAtTheDelete(t *testing.T) {
	c := &Container{ID: "c", Bundle: t.TempDir(), execs: map[string]*Process{}}
	c.execsIdle = sync.NewCond(&c.mu)
	c.init = newProcess(c, "", shimio.Config{}, nil)
	c.init.status = Running
	p := newProcess(c, "exited", shimio.Config{}, nil)
	c.execs[p.ID] = p
	gate, started := make(chan struct{}), make(chan struct{})
	p.OnExit(func(Snapshot) { close(started); <-gate })
	p.mu.Lock()
	p.setLocked(func() { p.status = Stopped })
	p.markExitedLocked()
	p.mu.Unlock()
	<-started // the answer is being written
	if err := p.Delete(context.Background(), func(Snapshot) {}); err != nil {
		t.Fatal(err)
	}
	if err := c.Handable(); !errdefs.IsFailedPrecondition(err) {
		t.Fatalf("Handable while the exited exec's Wait is being answered: %v, want FailedPrecondition", err)
	}
	close(gate)
	for deadline := time.Now().Add(5 * time.Second); c.Handable() != nil; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("Handable after the answer: %v", c.Handable())
		}
	}
}
