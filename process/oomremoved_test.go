package process

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containerd/errdefs"

	"github.com/example/containerd-shim-example-v2/cgroup"
	shimio "github.com/example/containerd-shim-example-v2/io"
	"github.com/example/containerd-shim-example-v2/oomlog"
	"github.com/example/containerd-shim-example-v2/oomlog/oomlogtest"
	cgroupv1 "github.com/example/containerd-shim-example-v2/proto/cgroups/cgroup1/stats"
	cgroupv2 "github.com/example/containerd-shim-example-v2/proto/cgroups/cgroup2/stats"
	"github.com/example/containerd-shim-example-v2/proto/codec"
	"github.com/example/containerd-shim-example-v2/reaper"
)

// systemdScope is a container's scope in a pod's slice, in a fake cgroup v2
// hierarchy: files the tests write, and remove as systemd does.
type systemdScope struct {
	slice, scope string
	cg           *cgroup.Cgroup
}

func newSystemdScope(t *testing.T) systemdScope {
	t.Helper()
	root := t.TempDir()
	if err := os.WriteFile(filepath.Join(root, "cgroup.controllers"), []byte("memory\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	slice := mkdir(t, filepath.Join(root, "pod.slice"))
	cg, err := cgroup.Parse(root, []byte("0::/pod.slice/c.scope\n"), true)
	if err != nil {
		t.Fatal(err)
	}
	return systemdScope{slice: slice, scope: filepath.Join(slice, "c.scope"), cg: cg}
}

// scopeInitPid is the PID of a newScopeContainer's init (never signalled).
const scopeInitPid = 1 << 22

// newScopeContainer returns a running container in s under the runtime's
// systemd driver, the kernel's log marked (when log is set) before its init
// exists, as Create does; events lists its OOM and exit events in order.
func newScopeContainer(t *testing.T, s systemdScope, log *oomlog.Log) (*Container, *[]string) {
	t.Helper()
	dir := t.TempDir()
	rt, _ := fakeRuntime(t, dir, "")
	rt.SystemdCgroup = true
	c := &Container{ID: "c", Bundle: dir, rt: rt, cg: s.cg, execs: map[string]*Process{}, ownPIDNS: true}
	c.execsIdle = sync.NewCond(&c.mu)
	var events []string
	c.events.OOM = func(*Container) { events = append(events, "oom") } // with c.mu held
	c.events.Exited = func(*Process, Snapshot) { c.mu.Lock(); events = append(events, "exit"); c.mu.Unlock() }
	c.markOOMLog(log)
	c.init = newProcess(c, "", shimio.Config{}, nil)
	c.init.pid, c.init.status = scopeInitPid, Running
	return c, &events
}

// A scope systemd removed before any read found the kill (the kernel held
// the kill's notice back): the parent's count, which includes its subtree's,
// grew since the last read, which found the container at its limit, and the
// init died of SIGKILL: reported, before the exit. Not for another death,
// nor for a container that had not met its limit.
func TestOOMKillCountedOnlyByTheParentOfARemovedScope(t *testing.T) {
	s := newSystemdScope(t)
	for _, tc := range []struct {
		name    string
		max     int // memory.events "max" at the notified read
		status  int
		wantOOM bool
	}{
		{"at its limit, SIGKILL", 1, 137, true},
		{"at its limit, SIGTERM", 1, 143, false},
		{"never at its limit", 0, 137, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			writeEvents(t, s.scope, "max 0\noom 0\noom_kill 0\n")
			writeEvents(t, s.slice, "max 0\noom 0\noom_kill 4\n")
			c, events := newScopeContainer(t, s, nil)

			writeEvents(t, s.scope, fmt.Sprintf("max %d\noom 0\noom_kill 0\n", tc.max))
			c.oomNotified() // the limit met, no kill yet
			writeEvents(t, s.slice, "max 0\noom 0\noom_kill 5\n")
			if err := os.RemoveAll(s.scope); err != nil { // the kill, and systemd's removal
				t.Fatal(err)
			}
			if _, _, err := c.Stats(); !errdefs.IsNotFound(err) {
				t.Errorf("Stats of a removed cgroup before the exit is recorded: %v, want NotFound", err)
			}
			c.initExited(reaper.Exit{Pid: c.init.pid, Status: tc.status, Time: time.Now()})
			want := "exit"
			if tc.wantOOM {
				want = "oom,exit"
			}
			if got := strings.Join(*events, ","); got != want {
				t.Errorf("events %q, want %q", got, want)
			}
			// After the exit, the metrics containerd 2.x's CRI reads at a 137
			// exit: the last figures read, the kill counted.
			data, url, err := c.Stats()
			if err != nil || url != cgroup.MetricsV2 {
				t.Fatalf("Stats after the exit: %q, %v", url, err)
			}
			var m cgroupv2.Metrics
			if err := codec.Unmarshal(data, &m); err != nil {
				t.Fatal(err)
			}
			wantKills := uint64(0)
			if tc.wantOOM {
				wantKills = 1
			}
			if ev := m.GetMemoryEvents(); ev.GetOomKill() != wantKills || ev.GetMax() != uint64(tc.max) {
				t.Errorf("memory events after the exit %+v, want oom_kill %d, max %d", ev, wantKills, tc.max)
			}
		})
	}
}

// A scope systemd removed before any read of it (the kernel's notice of the
// limit came too late, so neither the container's count nor its parent's
// was ever read, as in the systemd lane's one lost case in 96): the kernel's
// log names the init as the victim, and the kill is reported before the
// exit, with the verdict its paths give. Not for a victim logged before the
// container was created, nor for another PID, nor twice for a kill already
// reported from the count.
func TestOOMKillOfARemovedScopeFoundInTheKernelLog(t *testing.T) {
	s := newSystemdScope(t)
	const pid = scopeInitPid
	for _, tc := range []struct {
		name      string
		before    func(k *oomlogtest.Kernel)               // logged before the container is created
		after     func(k *oomlogtest.Kernel, c *Container) // between its creation and its exit
		want      string
		wantScope string
	}{
		{"the init, its own limit", nil, func(k *oomlogtest.Kernel, _ *Container) {
			k.OOMKill(pid, "/pod.slice/c.scope", "/pod.slice/c.scope", true)
		}, "oom,exit", cgroup.OOMScopeContainer},
		{"the init, the pod's limit", nil, func(k *oomlogtest.Kernel, _ *Container) {
			k.OOMKill(pid, "/pod.slice", "/pod.slice/c.scope", true)
		}, "oom,exit", cgroup.OOMScopeAncestor},
		{"the init, no summary", nil, func(k *oomlogtest.Kernel, _ *Container) {
			k.OOMKill(pid, "", "", false)
		}, "oom,exit", ""},
		{"the init, seen by its cgroup from a PID namespace", nil, func(k *oomlogtest.Kernel, _ *Container) {
			k.OOMKill(777, "/kind/pod.slice/c.scope", "/kind/pod.slice/c.scope", true)
		}, "oom,exit", cgroup.OOMScopeContainer},
		{"an earlier holder of the PID", func(k *oomlogtest.Kernel) {
			k.OOMKill(pid, "/old.scope", "/old.scope", true)
		}, nil, "exit", ""},
		{"another process", nil, func(k *oomlogtest.Kernel, _ *Container) {
			k.OOMKill(pid+1, "/pod.slice/d.scope", "/pod.slice/d.scope", true)
		}, "exit", ""},
		{"already reported from the count", nil, func(k *oomlogtest.Kernel, c *Container) {
			k.OOMKill(pid, "/pod.slice/c.scope", "/pod.slice/c.scope", true)
			writeEvents(t, s.scope, "max 1\noom 1\noom_kill 1\n")
			c.oomNotified() // read in time: reported from the count
		}, "oom,exit", cgroup.OOMScopeContainer},
	} {
		t.Run(tc.name, func(t *testing.T) {
			writeEvents(t, s.scope, "max 0\noom 0\noom_kill 0\n")
			writeEvents(t, s.slice, "max 0\noom 0\noom_kill 0\n")
			k := oomlogtest.New(t)
			if tc.before != nil {
				tc.before(k)
			}
			c, events := newScopeContainer(t, s, k.Log)
			if tc.after != nil {
				tc.after(k, c)
			}
			if err := os.RemoveAll(s.scope); err != nil { // systemd's removal
				t.Fatal(err)
			}
			c.initExited(reaper.Exit{Pid: pid, Status: 137, Time: time.Now()})
			if got := strings.Join(*events, ","); got != tc.want {
				t.Errorf("events %q, want %q", got, tc.want)
			}
			if _, scope := c.OOMInfo(); scope != tc.wantScope {
				t.Errorf("verdict %q, want %q", scope, tc.wantScope)
			}
		})
	}
}

func writeEvents(t *testing.T, dir, content string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "memory.events"), []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// A kill that came between the notice's read of the parent's count and its
// read of the container's is reported from the container's; the parent's,
// read again at the exit, has it too, and must not report it a second time
// (the systemd lane did, in 5 of 24 cases). A second kill the parent counted
// since still is. The kernel counts the kill in the container's cgroup, then
// in the parent's: the notice's second read of the parent's count has it.
func TestOOMKillInBothCountsReportedOnce(t *testing.T) {
	s := newSystemdScope(t)
	for _, tc := range []struct {
		name        string
		parentAtEnd int
		want        string
	}{
		{"the same kill", 5, "oom,exit"},
		{"a second kill", 6, "oom,oom,exit"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			writeEvents(t, s.slice, "max 0\noom 0\noom_kill 4\n")
			writeEvents(t, s.scope, "max 1\noom 1\noom_kill 0\n")
			c, events := newScopeContainer(t, s, nil)
			killAfterParentRead(t, func() {
				writeEvents(t, s.scope, "max 1\noom 1\noom_kill 1\n")
				writeEvents(t, s.slice, "max 0\noom 0\noom_kill 5\n")
			})
			c.oomNotified()
			writeEvents(t, s.slice, fmt.Sprintf("max 0\noom 0\noom_kill %d\n", tc.parentAtEnd))
			if err := os.RemoveAll(s.scope); err != nil {
				t.Fatal(err)
			}
			c.initExited(reaper.Exit{Pid: c.init.pid, Status: 137, Time: time.Now()})
			if got := strings.Join(*events, ","); got != tc.want {
				t.Errorf("events %q, want %q", got, tc.want)
			}
		})
	}
}

// killAfterParentRead runs kill right after the next read of a parent's
// count, once, until the test ends.
func killAfterParentRead(t *testing.T, kill func()) {
	t.Helper()
	read := parentOOMKills
	t.Cleanup(func() { parentOOMKills = read })
	var once sync.Once
	parentOOMKills = func(cg *cgroup.Cgroup) (uint64, error) {
		n, err := read(cg)
		once.Do(kill)
		return n, err
	}
}

// A kill that both counts hold when a notice reads them (the usual case: the
// notice comes after the kill) is reported from the container's count. A
// second kill, of the init, whose scope systemd removes before it is read
// (within the kernel's 10 ms notice spacing), grows the parent's count by
// one more: it is reported too. The first kill was taken for one of the
// parent's since its read, and the second for it.
func TestOOMKillOfARemovedScopeAfterAReportedOne(t *testing.T) {
	s := newSystemdScope(t)
	writeEvents(t, s.slice, "max 0\noom 0\noom_kill 4\n")
	writeEvents(t, s.scope, "max 0\noom 0\noom_kill 0\n")
	c, events := newScopeContainer(t, s, nil)

	// The first kill (a child of the init), in both counts before the
	// notice's reads.
	writeEvents(t, s.scope, "max 1\noom 1\noom_kill 1\n")
	writeEvents(t, s.slice, "max 1\noom 0\noom_kill 5\n")
	c.oomNotified()
	// The second, of the init: the parent counts it, the scope goes.
	writeEvents(t, s.slice, "max 2\noom 0\noom_kill 6\n")
	if err := os.RemoveAll(s.scope); err != nil {
		t.Fatal(err)
	}
	c.initExited(reaper.Exit{Pid: c.init.pid, Status: 137, Time: time.Now()})
	if got := strings.Join(*events, ","); got != "oom,oom,exit" {
		t.Errorf("events %q, want oom,oom,exit", got)
	}
}

// Under cgroup v1 systemd removes an emptied scope's directories too, and
// v1 keeps no subtree count to fall back on: the kernel's log alone tells
// that the init was OOM-killed. Its metrics after the exit count the kill.
func TestOOMKillOfARemovedV1ScopeFoundInTheKernelLog(t *testing.T) {
	root := t.TempDir()
	scope := mkdir(t, filepath.Join(root, "memory", "pod.slice", "c.scope"))
	if err := os.WriteFile(filepath.Join(scope, "memory.oom_control"), []byte("oom_kill_disable 0\nunder_oom 0\noom_kill 0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cg, err := cgroup.Parse(root, []byte("9:memory:/pod.slice/c.scope\n"), false)
	if err != nil {
		t.Fatal(err)
	}
	k := oomlogtest.New(t)
	c, events := newScopeContainer(t, systemdScope{scope: scope, cg: cg}, k.Log)
	k.OOMKill(scopeInitPid, "/pod.slice/c.scope", "/pod.slice/c.scope", true)
	if err := os.RemoveAll(scope); err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.Stats(); !errdefs.IsNotFound(err) {
		t.Errorf("Stats of a removed cgroup before the exit is recorded: %v, want NotFound", err)
	}
	c.initExited(reaper.Exit{Pid: scopeInitPid, Status: 137, Time: time.Now()})
	if got := strings.Join(*events, ","); got != "oom,exit" {
		t.Errorf("events %q, want oom,exit", got)
	}
	if _, scope := c.OOMInfo(); scope != cgroup.OOMScopeContainer {
		t.Errorf("verdict %q, want %q", scope, cgroup.OOMScopeContainer)
	}
	// containerd 2.x's CRI reads a v1 kill from memory.oom_control's count.
	data, url, err := c.Stats()
	if err != nil || url != cgroup.MetricsV1 {
		t.Fatalf("Stats after the exit: %q, %v", url, err)
	}
	var m cgroupv1.Metrics
	if err := codec.Unmarshal(data, &m); err != nil {
		t.Fatal(err)
	}
	if got := m.GetMemoryOomControl().GetOomKill(); got != 1 {
		t.Errorf("oom_kill after the exit %d, want 1", got)
	}
}

// Under cgroup v1 systemd can remove the scope between the exit path's read
// of the kill count and the read of the limit counters that tell whose limit
// it was (the systemd lane saw it once). The kernel's log then names the
// limit; without it, the container's own limit, which it had, is the
// likelier, not an ancestor's, which the missing counters read as zeros
// used to give.
func TestOOMVerdictOfAV1ScopeRemovedAfterTheCount(t *testing.T) {
	for _, c := range []struct {
		name   string
		logged string // oom_memcg of the kernel's line; "-" for no log
		want   string
	}{
		{"logged: its own limit", "/pod.slice/c.scope", cgroup.OOMScopeContainer},
		{"logged: the pod's limit", "/pod.slice", cgroup.OOMScopeAncestor},
		{"no log", "-", cgroup.OOMScopeContainer},
	} {
		t.Run(c.name, func(t *testing.T) {
			root := t.TempDir()
			pod := mkdir(t, filepath.Join(root, "memory", "pod.slice"))
			scope := mkdir(t, filepath.Join(pod, "c.scope"))
			for file, content := range map[string]string{
				"memory.oom_control":        "oom_kill_disable 0\nunder_oom 0\noom_kill 0\n",
				"memory.limit_in_bytes":     "33554432\n",
				"memory.failcnt":            "0\n",
				"memory.max_usage_in_bytes": "0\n",
				"../memory.failcnt":         "0\n",
			} {
				if err := os.WriteFile(filepath.Join(scope, file), []byte(content), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			cg, err := cgroup.Parse(root, []byte("9:memory:/pod.slice/c.scope\n"), false)
			if err != nil {
				t.Fatal(err)
			}
			var log *oomlog.Log
			var k *oomlogtest.Kernel
			if c.logged != "-" {
				k = oomlogtest.New(t)
				log = k.Log
			}
			ctr, events := newScopeContainer(t, systemdScope{scope: scope, cg: cg}, log)
			ctr.oom.limitMarks = cg.LimitMarks() // as at create (watchCgroup)
			if k != nil {
				k.OOMKill(scopeInitPid, c.logged, "/pod.slice/c.scope", true)
			}
			// The kill is counted; the scope's other files are gone by the
			// time they are read (the fake keeps memory.oom_control).
			for _, file := range []string{"memory.limit_in_bytes", "memory.failcnt", "memory.max_usage_in_bytes"} {
				if err := os.Remove(filepath.Join(scope, file)); err != nil {
					t.Fatal(err)
				}
			}
			replaceFile(t, filepath.Join(scope, "memory.oom_control"), "oom_kill_disable 0\nunder_oom 0\noom_kill 1\n")
			ctr.initExited(reaper.Exit{Pid: scopeInitPid, Status: 137, Time: time.Now()})
			if got := strings.Join(*events, ","); got != "oom,exit" {
				t.Errorf("events %q, want oom,exit", got)
			}
			if _, scope := ctr.OOMInfo(); scope != c.want {
				t.Errorf("verdict %q, want %q", scope, c.want)
			}
		})
	}
}

// A notice that a systemd-managed container met its limit starts the 1 ms
// reads of its count only where the kernel's log cannot be read: a container
// living at its limit would otherwise be read many times a second for
// nothing the log does not tell at the exit.
func TestOOMPollOnlyWithoutTheKernelLog(t *testing.T) {
	for _, withLog := range []bool{false, true} {
		t.Run(fmt.Sprintf("log %v", withLog), func(t *testing.T) {
			s := newSystemdScope(t)
			writeEvents(t, s.scope, "max 0\noom 0\noom_kill 0\n")
			writeEvents(t, s.slice, "max 0\noom 0\noom_kill 0\n")
			var log *oomlog.Log
			if withLog {
				log = oomlogtest.New(t).Log
			}
			c, _ := newScopeContainer(t, s, log)
			var w cgroup.OOMWatcher
			defer w.Close()
			c.oomWatcher = &w
			writeEvents(t, s.scope, "max 3\noom 0\noom_kill 0\n")
			c.oomNotified()
			c.mu.Lock()
			polling := c.oom.polling
			c.oom.stopped = true // ends the reads
			c.mu.Unlock()
			if polling == withLog {
				t.Errorf("polling %v with the kernel's log readable %v", polling, withLog)
			}
		})
	}
}
