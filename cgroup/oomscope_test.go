package cgroup

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// The counters each shape of OOM kill leaves, as measured on real kernels
// (v1 on 6.x: a memory+swap limit equal to the memory limit moves neither
// failcnt; only the peak usage shows the limit was reached).
func TestOOMScopeV1(t *testing.T) {
	const limit = 15 << 20
	unlimited := "9223372036854771712"
	type counters struct{ failcnt, peak, memswLimit, memswPeak, podFailcnt string }
	for _, c := range []struct {
		name          string
		before, after counters
		want          string
	}{
		{"own memory limit", counters{"0", "0", unlimited, "0", "0"}, counters{"134", fmt.Sprint(limit), unlimited, fmt.Sprint(limit + 4096), "0"}, OOMScopeContainer},
		{"own memory and memsw limits equal (kubelet)", counters{"0", "0", fmt.Sprint(limit), "0", "0"}, counters{"0", fmt.Sprint(limit), fmt.Sprint(limit), fmt.Sprint(limit), "0"}, OOMScopeContainer},
		{"pod limit, container unlimited", counters{"0", "0", unlimited, "0", "3"}, counters{"0", "30000000", unlimited, "30000000", "90"}, OOMScopeAncestor},
		{"pod limit, container below its own", counters{"0", "0", fmt.Sprint(limit), "0", "0"}, counters{"0", "8000000", fmt.Sprint(limit), "8000000", "12"}, OOMScopeAncestor},
		{"own limit again (peak already there)", counters{"0", fmt.Sprint(limit), fmt.Sprint(limit), fmt.Sprint(limit), "0"}, counters{"0", fmt.Sprint(limit), fmt.Sprint(limit), fmt.Sprint(limit), "0"}, OOMScopeContainer},
		// The container's page cache lives at its limit: its failcnt moves
		// with each reclaim (823 measured with no kill), whatever limit the
		// kill came from.
		{"pod limit, container reclaiming at its own", counters{"250", fmt.Sprint(limit), fmt.Sprint(limit), fmt.Sprint(limit), "0"}, counters{"823", fmt.Sprint(limit), fmt.Sprint(limit), fmt.Sprint(limit), "3"}, OOMScopeAncestor},
		{"no limit anywhere moved (node OOM)", counters{"0", "0", unlimited, "0", "0"}, counters{"0", "5000000", unlimited, "5000000", "0"}, OOMScopeAncestor},
	} {
		t.Run(c.name, func(t *testing.T) {
			root := t.TempDir()
			cg, err := Parse(root, []byte("9:memory:/kubepods/pod1/c1\n"), false)
			if err != nil {
				t.Fatal(err)
			}
			pod := filepath.Join(root, "memory/kubepods/pod1")
			dir := filepath.Join(pod, "c1")
			set := func(k counters) {
				memLimit := unlimited
				if k.memswLimit != unlimited {
					memLimit = k.memswLimit
				} else if c.want == OOMScopeContainer {
					memLimit = fmt.Sprint(limit)
				}
				write(t, dir, "memory.limit_in_bytes", memLimit+"\n")
				write(t, dir, "memory.failcnt", k.failcnt+"\n")
				write(t, dir, "memory.max_usage_in_bytes", k.peak+"\n")
				write(t, dir, "memory.memsw.limit_in_bytes", k.memswLimit+"\n")
				write(t, dir, "memory.memsw.max_usage_in_bytes", k.memswPeak+"\n")
				write(t, dir, "memory.memsw.failcnt", "0\n")
				write(t, pod, "memory.failcnt", k.podFailcnt+"\n")
				write(t, filepath.Join(root, "memory/kubepods"), "memory.failcnt", "0\n")
			}
			set(c.before)
			marks := cg.LimitMarks()
			set(c.after)
			if got, _ := cg.OOMScope(marks); got != c.want {
				t.Errorf("scope %q, want %q", got, c.want)
			}
		})
	}
}

func TestOOMScopeV2(t *testing.T) {
	root := t.TempDir()
	write(t, root, "cgroup.controllers", "memory\n")
	cg, err := Parse(root, []byte("0::/kubepods/pod1/c1\n"), true)
	if err != nil {
		t.Fatal(err)
	}
	d := filepath.Join(root, "kubepods/pod1/c1")
	// Without memory.events.local, memory.events "oom" stands in.
	write(t, d, "memory.events", "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\n")
	marks := cg.LimitMarks()
	write(t, d, "memory.events", "low 0\nhigh 0\nmax 4\noom 1\noom_kill 1\n")
	if scope, _ := cg.OOMScope(marks); scope != OOMScopeContainer {
		t.Errorf("own limit (memory.events oom grew): %q", scope)
	}
	// memory.events.local "oom" is the cgroup's own limit's failures;
	// memory.events "oom" adds those of the limits below it (the kernel
	// counts an event at the cgroup whose limit failed and every ancestor
	// of it), never an ancestor's. oom_kill counts victims, wherever the
	// limit was.
	write(t, d, "memory.events.local", "low 0\nhigh 0\nmax 0\noom 0\noom_kill 1\n")
	marks = cg.LimitMarks()
	write(t, d, "memory.events.local", "low 0\nhigh 0\nmax 0\noom 0\noom_kill 2\n")
	write(t, d, "memory.events", "low 0\nhigh 0\nmax 4\noom 1\noom_kill 2\n")
	if scope, _ := cg.OOMScope(marks); scope != OOMScopeAncestor {
		t.Errorf("a parent's limit (a victim here, no oom counted here or below): %q", scope)
	}
	marks = cg.LimitMarks()
	write(t, d, "memory.events", "low 0\nhigh 0\nmax 4\noom 2\noom_kill 3\n")
	write(t, d, "memory.events.local", "low 0\nhigh 0\nmax 0\noom 0\noom_kill 2\n")
	if scope, _ := cg.OOMScope(marks); scope != OOMScopeBelow {
		t.Errorf("a limit below the container's (memory.events oom grew, .local did not): %q", scope)
	}
	marks = cg.LimitMarks()
	write(t, d, "memory.events.local", "low 0\nhigh 0\nmax 2\noom 1\noom_kill 3\n")
	if scope, _ := cg.OOMScope(marks); scope != OOMScopeContainer {
		t.Errorf("own limit (memory.events.local oom grew): %q", scope)
	}
}

// A v1 cgroup that systemd removed with its last process after the kill
// was counted and before its counters were read: an ancestor whose failcnt
// grew still tells; otherwise its own limit, if it had one, is the verdict,
// not an ancestor's (which the zeros of the missing files used to give).
func TestOOMScopeV1OfARemovedCgroup(t *testing.T) {
	const unlimited = "9223372036854771712"
	for _, c := range []struct {
		name, limit, podFailcntAfter string
		want                         string
	}{
		{"own limit", "33554432", "0", OOMScopeContainer},
		{"no limit of its own", unlimited, "0", OOMScopeAncestor},
		{"an ancestor's failcnt grew", "33554432", "4", OOMScopeAncestor},
	} {
		t.Run(c.name, func(t *testing.T) {
			root := t.TempDir()
			cg, err := Parse(root, []byte("9:memory:/pod.slice/c.scope\n"), false)
			if err != nil {
				t.Fatal(err)
			}
			pod := filepath.Join(root, "memory/pod.slice")
			dir := filepath.Join(pod, "c.scope")
			write(t, dir, "memory.limit_in_bytes", c.limit+"\n")
			write(t, dir, "memory.failcnt", "0\n")
			write(t, dir, "memory.max_usage_in_bytes", "0\n")
			write(t, dir, "memory.memsw.limit_in_bytes", unlimited+"\n")
			write(t, dir, "memory.memsw.max_usage_in_bytes", "0\n")
			write(t, pod, "memory.failcnt", "0\n")
			marks := cg.LimitMarks()
			if marks.Gone {
				t.Fatal("marks of a cgroup that is there say it is gone")
			}
			if err := os.RemoveAll(dir); err != nil {
				t.Fatal(err)
			}
			write(t, pod, "memory.failcnt", c.podFailcntAfter+"\n")
			now := cg.LimitMarks()
			if !now.Gone {
				t.Error("marks of a removed cgroup do not say it is gone")
			}
			if got, _ := cg.OOMScopeOf(marks, now); got != c.want {
				t.Errorf("scope %q, want %q", got, c.want)
			}
		})
	}
}

// The verdict from the paths of the kernel's "oom-kill:" line: the
// container's own limit, a cgroup's inside it, an ancestor's, the node's;
// a cgroup namespace sees the tail of the kernel's paths; no paths, no
// verdict.
func TestScopeOfLogged(t *testing.T) {
	v2, err := Parse("/sys/fs/cgroup", []byte("0::/pod.slice/c.scope\n"), true)
	if err != nil {
		t.Fatal(err)
	}
	v1, err := Parse("/sys/fs/cgroup", []byte("9:memory:/pod/c\n4:cpu,cpuacct:/pod/c\n"), false)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		cg                  *Cgroup
		oomMemcg, taskMemcg string
		want                string
	}{
		{v2, "/pod.slice/c.scope", "/pod.slice/c.scope", OOMScopeContainer},
		{v2, "/node.slice/pod.slice/c.scope", "/node.slice/pod.slice/c.scope", OOMScopeContainer}, // seen from a cgroup namespace
		{v2, "/pod.slice/c.scope/inner", "/pod.slice/c.scope/inner", OOMScopeBelow},
		{v2, "/pod.slice", "/pod.slice/c.scope", OOMScopeAncestor},
		{v2, "/pod.slice/c.scope2", "/pod.slice/c.scope2", OOMScopeAncestor}, // not a path prefix
		{v2, "", "/pod.slice/c.scope", OOMScopeAncestor},                     // the node's memory
		{v2, "", "", ""},
		{v1, "/pod/c", "/pod/c", OOMScopeContainer},
		{v1, "/pod", "/pod/c", OOMScopeAncestor},
	} {
		if got := tc.cg.ScopeOfLogged(tc.oomMemcg, tc.taskMemcg); got != tc.want {
			t.Errorf("%s: ScopeOfLogged(%q, %q) = %q, want %q", tc.cg.hierarchyPath(), tc.oomMemcg, tc.taskMemcg, got, tc.want)
		}
	}
	for path, want := range map[string]bool{
		"/pod.slice/c.scope": true, "/node/pod.slice/c.scope": true, "/pod.slice/c.scope/inner": true,
		"/pod.slice": false, "/pod.slice/d.scope": false, "/pod.slice/c.scope2": false, "": false,
	} {
		if got := v2.HoldsLogged(path); got != want {
			t.Errorf("HoldsLogged(%q) = %v, want %v", path, got, want)
		}
	}
}

// v1 counts an OOM victim in its own cgroup alone: the kills below a
// container (systemd inside it) are the sum of its descendants' counts, not
// its own, and a cgroup gone has no count left.
func TestOOMKillsBelowV1(t *testing.T) {
	root := t.TempDir()
	cg, err := Parse(root, []byte("9:memory:/pod/c\n"), false)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(root, "memory/pod/c")
	kills := func(dir string, n int) {
		write(t, dir, "memory.oom_control", fmt.Sprintf("oom_kill_disable 0\nunder_oom 0\noom_kill %d\n", n))
	}
	kills(filepath.Join(root, "memory/pod"), 7)   // an ancestor's: not below
	kills(filepath.Join(root, "memory/pod/d"), 7) // a sibling's
	kills(dir, 5)                                 // its own
	if n, err := cg.OOMKillsBelow(); err != nil || n != 0 {
		t.Errorf("no cgroup below: %d, %v; want 0", n, err)
	}
	kills(filepath.Join(dir, "system.slice"), 1)
	kills(filepath.Join(dir, "system.slice/a.service"), 2)
	kills(filepath.Join(dir, "init.scope"), 0)
	if n, err := cg.OOMKillsBelow(); err != nil || n != 3 {
		t.Errorf("kills below: %d, %v; want 3", n, err)
	}
	if err := os.RemoveAll(filepath.Join(dir, "system.slice/a.service")); err != nil {
		t.Fatal(err)
	}
	if n, err := cg.OOMKillsBelow(); err != nil || n != 1 {
		t.Errorf("a cgroup below removed: %d, %v; want 1", n, err)
	}
}
