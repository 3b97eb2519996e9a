package cgroup

import (
	"fmt"
	"maps"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
	"unsafe"

	cgroupsv1 "github.com/containerd/cgroups/v3/cgroup1/stats"
	cgroupsv2 "github.com/containerd/cgroups/v3/cgroup2/stats"
	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/example/containerd-shim-example-v2/internal/fdtest"
)

// decodeMetrics encodes the cgroup's statistics as the shim sends them and
// decodes them with containerd/cgroups' own types, as containerd does.
func decodeMetrics(t *testing.T, cg *Cgroup, wantURL string, m proto.Message) {
	t.Helper()
	data, url, err := cg.Metrics()
	if err != nil {
		t.Fatal(err)
	}
	if url != wantURL {
		t.Fatalf("type URL %q, want %q", url, wantURL)
	}
	if err := proto.Unmarshal(data, m); err != nil {
		t.Fatalf("containerd/cgroups cannot decode the statistics: %v", err)
	}
}

func write(t *testing.T, dir, name, content string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestParseV1AndStats(t *testing.T) {
	root := t.TempDir()
	proc := "12:pids:/ns/c1\n11:cpu:/ns/c1\n10:cpuacct:/ns/c1\n9:memory:/ns/c1\n8:blkio:/ns/c1\n1:name=systemd:/x\n0::/\n"
	cg, err := Parse(root, []byte(proc), false)
	if err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(root, "pids/ns/c1"), "pids.current", "3\n")
	write(t, filepath.Join(root, "pids/ns/c1"), "pids.max", "max\n")
	write(t, filepath.Join(root, "cpuacct/ns/c1"), "cpuacct.usage", "123456\n")
	write(t, filepath.Join(root, "cpuacct/ns/c1"), "cpuacct.usage_percpu", "100000 23456 \n")
	write(t, filepath.Join(root, "cpuacct/ns/c1"), "cpuacct.stat", "user 2\nsystem 1\n")
	write(t, filepath.Join(root, "cpu/ns/c1"), "cpu.stat", "nr_periods 5\nnr_throttled 2\nthrottled_time 999\n")
	mem := filepath.Join(root, "memory/ns/c1")
	write(t, mem, "memory.stat", "cache 4096\nrss 8192\ntotal_rss 8192\nhierarchical_memory_limit 33554432\n")
	write(t, mem, "memory.usage_in_bytes", "12288\n")
	write(t, mem, "memory.max_usage_in_bytes", "20000\n")
	write(t, mem, "memory.limit_in_bytes", "33554432\n")
	write(t, mem, "memory.failcnt", "7\n")
	write(t, mem, "memory.oom_control", "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n")
	write(t, filepath.Join(root, "blkio/ns/c1"), "blkio.throttle.io_service_bytes_recursive", "8:0 Read 4096\n8:0 Write 512\nTotal 4608\n")

	m, err := cg.StatsV1()
	if err != nil {
		t.Fatal(err)
	}
	if m.Pids.Current != 3 || m.Pids.Limit != 0 {
		t.Errorf("pids %+v", m.Pids)
	}
	if m.CPU.Usage.Total != 123456 || len(m.CPU.Usage.PerCPU) != 2 || m.CPU.Usage.User != 2e7 || m.CPU.Usage.Kernel != 1e7 {
		t.Errorf("cpu usage %+v", m.CPU.Usage)
	}
	if m.CPU.Throttling.ThrottledPeriods != 2 || m.CPU.Throttling.ThrottledTime != 999 {
		t.Errorf("throttling %+v", m.CPU.Throttling)
	}
	if m.Memory.Cache != 4096 || m.Memory.RSS != 8192 || m.Memory.Usage.Usage != 12288 || m.Memory.Usage.Limit != 33554432 ||
		m.Memory.Usage.Max != 20000 || m.Memory.Usage.Failcnt != 7 || m.Memory.Swap != nil {
		t.Errorf("memory %+v usage %+v", m.Memory, m.Memory.Usage)
	}
	if m.MemoryOomControl.OomKill != 2 {
		t.Errorf("oom control %+v", m.MemoryOomControl)
	}
	if len(m.Blkio.IoServiceBytesRecursive) != 2 || m.Blkio.IoServiceBytesRecursive[1].Op != "Write" || m.Blkio.IoServiceBytesRecursive[1].Value != 512 {
		t.Errorf("blkio %+v", m.Blkio)
	}
	if n, err := cg.OOMKills(); err != nil || n != 2 {
		t.Errorf("OOMKills = %d, %v", n, err)
	}
	if !cg.Exists() {
		t.Error("cgroup should exist")
	}
	os.RemoveAll(mem)
	if cg.Exists() {
		t.Error("removed cgroup still exists")
	}
}

func TestParseV2AndStats(t *testing.T) {
	root := t.TempDir()
	write(t, root, "cgroup.controllers", "cpu memory pids io\n")
	if !Unified(root) {
		t.Fatal("fixture root not detected as unified")
	}
	cg, err := Parse(root, []byte("0::/kubepods/pod1/c1\n"), true)
	if err != nil {
		t.Fatal(err)
	}
	d := filepath.Join(root, "kubepods/pod1/c1")
	write(t, d, "pids.current", "4\n")
	write(t, d, "pids.max", "100\n")
	write(t, d, "cpu.stat", "usage_usec 5000\nuser_usec 3000\nsystem_usec 2000\nnr_periods 10\nnr_throttled 1\nthrottled_usec 77\n")
	write(t, d, "memory.stat", "anon 1000\nfile 2000\nslab 300\npgfault 12\n")
	write(t, d, "memory.current", "4096\n")
	write(t, d, "memory.max", "max\n")
	write(t, d, "memory.swap.current", "0\n")
	write(t, d, "memory.events", "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n")
	write(t, d, "io.stat", "8:0 rbytes=100 wbytes=200 rios=1 wios=2 dbytes=0 dios=0\n")
	write(t, d, "cpu.pressure", "some avg10=1.50 avg60=0.25 avg300=0.05 total=123456\nfull avg10=0.75 avg60=0.00 avg300=0.00 total=6543\n")
	write(t, d, "memory.pressure", "some avg10=0.00 avg60=0.00 avg300=0.00 total=42\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=41\n")
	write(t, d, "io.pressure", "some avg10=9.99 avg60=0.00 avg300=0.00 total=7\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=6\n")
	write(t, d, "hugetlb.2MB.current", "4194304\n")
	write(t, d, "hugetlb.2MB.max", "max\n")
	write(t, d, "hugetlb.2MB.events", "max 2\n")
	write(t, d, "hugetlb.2MB.rsvd.current", "0\n")
	write(t, d, "hugetlb.1GB.current", "0\n")
	write(t, d, "hugetlb.1GB.max", "1073741824\n")

	m, err := cg.StatsV2()
	if err != nil {
		t.Fatal(err)
	}
	if m.Pids.Current != 4 || m.Pids.Limit != 100 {
		t.Errorf("pids %+v", m.Pids)
	}
	if m.CPU.UsageUsec != 5000 || m.CPU.UserUsec != 3000 || m.CPU.ThrottledUsec != 77 {
		t.Errorf("cpu %+v", m.CPU)
	}
	if m.Memory.Anon != 1000 || m.Memory.File != 2000 || m.Memory.Usage != 4096 || m.Memory.UsageLimit != ^uint64(0) {
		t.Errorf("memory %+v", m.Memory)
	}
	if m.MemoryEvents.OomKill != 1 || m.MemoryEvents.Max != 3 {
		t.Errorf("memory events %+v", m.MemoryEvents)
	}
	if len(m.Io.Usage) != 1 || m.Io.Usage[0].Rbytes != 100 || m.Io.Usage[0].Wios != 2 || m.Io.Usage[0].Major != 8 {
		t.Errorf("io %+v", m.Io)
	}
	if p := m.CPU.PSI; p == nil || p.Some.Avg10 != 1.5 || p.Some.Avg60 != 0.25 || p.Some.Total != 123456 || p.Full.Avg10 != 0.75 || p.Full.Total != 6543 {
		t.Errorf("cpu PSI %+v", m.CPU.PSI)
	}
	if p := m.Memory.PSI; p == nil || p.Some.Total != 42 || p.Full.Total != 41 {
		t.Errorf("memory PSI %+v", m.Memory.PSI)
	}
	if p := m.Io.PSI; p == nil || p.Some.Avg10 != 9.99 || p.Full.Total != 6 {
		t.Errorf("io PSI %+v", m.Io.PSI)
	}
	hugetlb := map[string]string{}
	for _, h := range m.Hugetlb {
		hugetlb[h.Pagesize] = fmt.Sprintf("%d/%d/%d", h.Current, h.Max, h.Failcnt)
	}
	if want := map[string]string{"2MB": fmt.Sprintf("4194304/%d/2", uint64(math.MaxUint64)), "1GB": "0/1073741824/0"}; !maps.Equal(hugetlb, want) {
		t.Errorf("hugetlb %v, want %v (current/max/failcnt; no limit is the largest value, as containerd/cgroups reports v2)", hugetlb, want)
	}
	write(t, d, "pids.max", "max\n")
	if m, err := cg.StatsV2(); err != nil || m.Pids.Limit != math.MaxUint64 {
		t.Errorf("pids without a limit: %+v (%v), want the largest value as containerd/cgroups reports v2", m.Pids, err)
	}
	if n, err := cg.OOMKills(); err != nil || n != 1 {
		t.Errorf("OOMKills = %d, %v", n, err)
	}
}

// v2 OOM watching is inotify on memory.events: a write there must notify.
// v2EventsCgroup is a v2 cgroup named name under root whose memory.events
// (in the returned directory) says no OOM kill yet.
func v2EventsCgroup(t *testing.T, root, name string) (string, *Cgroup) {
	t.Helper()
	d := filepath.Join(root, name)
	write(t, d, "memory.events", "oom_kill 0\n")
	cg, err := Parse(root, []byte("0::/"+name+"\n"), true)
	if err != nil {
		t.Fatal(err)
	}
	return d, cg
}

func TestWatchOOMV2Notifies(t *testing.T) {
	root := t.TempDir()
	d, cg := v2EventsCgroup(t, root, "c1")
	var w OOMWatcher
	defer w.Close()
	// Two cgroups in the one watcher: each change notifies its own.
	d2, cg2 := v2EventsCgroup(t, root, "c2")
	got, got2 := make(chan struct{}, 4), make(chan struct{}, 4)
	stop, err := w.Watch(cg, func() { got <- struct{}{} })
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	stop2, err := w.Watch(cg2, func() { got2 <- struct{}{} })
	if err != nil {
		t.Fatal(err)
	}
	// One write can raise two inotify events (truncate, then write), and a
	// notification already being delivered may land a moment later: settle
	// lets those arrive and drops them before the next check.
	settle := func(ch chan struct{}) {
		time.Sleep(100 * time.Millisecond)
		for len(ch) > 0 {
			<-ch
		}
	}
	write(t, d, "memory.events", "oom_kill 1\n")
	select {
	case <-got:
	case <-timeAfter():
		t.Fatal("no notification after memory.events changed")
	}
	settle(got)
	write(t, d2, "memory.events", "oom_kill 1\n")
	select {
	case <-got2:
	case <-timeAfter():
		t.Fatal("no notification for the second cgroup")
	}
	if len(got) != 0 {
		t.Fatal("the first cgroup was notified for the second's change")
	}
	stop2()
	settle(got2)
	write(t, d2, "memory.events", "oom_kill 2\n")
	select {
	case <-got2:
		t.Fatal("notified after stop")
	case <-time.After(200 * time.Millisecond):
	}
}

// The cgroup's emptying (cgroup.events) notifies too: a scope that systemd
// manages is removed right after it, and a kill's notice through
// memory.events may come later. A stop ends both watches.
func TestWatchOOMV2NotifiesWhenTheCgroupEmpties(t *testing.T) {
	root := t.TempDir()
	d, cg := v2EventsCgroup(t, root, "c1")
	write(t, d, "cgroup.events", "populated 1\nfrozen 0\n")
	var w OOMWatcher
	defer w.Close()
	got := make(chan struct{}, 4)
	stop, err := w.Watch(cg, func() { got <- struct{}{} })
	if err != nil {
		t.Fatal(err)
	}
	w.mu.Lock()
	watched := len(w.wds)
	w.mu.Unlock()
	if watched != 2 {
		t.Fatalf("%d inotify watches for one cgroup, want 2 (memory.events, cgroup.events)", watched)
	}
	write(t, d, "cgroup.events", "populated 0\nfrozen 0\n")
	select {
	case <-got:
	case <-timeAfter():
		t.Fatal("no notification when cgroup.events changed")
	}
	stop()
	w.mu.Lock()
	left := len(w.wds)
	w.mu.Unlock()
	if left != 0 {
		t.Errorf("%d inotify watches left after stop", left)
	}
}

func TestParseRejectsEmpty(t *testing.T) {
	if _, err := Parse(t.TempDir(), []byte("garbage"), false); err == nil {
		t.Fatal("no cgroup lines accepted")
	}
}

// Same tells one cgroup from another by every hierarchy's directory: two
// processes that differ in a single v1 controller are in different cgroups.
func TestSame(t *testing.T) {
	root := t.TempDir()
	parse := func(v2 bool, lines string) *Cgroup {
		t.Helper()
		cg, err := Parse(root, []byte(lines), v2)
		if err != nil {
			t.Fatal(err)
		}
		return cg
	}
	shim := "4:memory:/user.slice\n3:pids:/user.slice\n2:cpu,cpuacct:/user.slice\n1:name=systemd:/user.slice/s\n0::/user.slice/s\n"
	if !parse(false, shim).Same(parse(false, shim)) {
		t.Error("one v1 cgroup is not Same as itself")
	}
	// The named systemd hierarchy and the hybrid v2 line are not controllers.
	if !parse(false, shim).Same(parse(false, strings.ReplaceAll(shim, "/user.slice/s", "/other"))) {
		t.Error("v1 cgroups differing only outside the controllers are not Same")
	}
	if parse(false, shim).Same(parse(false, strings.Replace(shim, "4:memory:/user.slice", "4:memory:/user.slice/c1", 1))) {
		t.Error("v1 cgroups differing in the memory controller are Same")
	}
	if !parse(true, "0::/a/b\n").Same(parse(true, "0::/a/b\n")) || parse(true, "0::/a/b\n").Same(parse(true, "0::/a/b/c\n")) {
		t.Error("v2: Same must compare the one directory")
	}
	if parse(true, "0::/a\n").Same(parse(false, "4:memory:/a\n")) {
		t.Error("a v2 cgroup is Same as a v1 one")
	}
}

func timeAfter() <-chan time.Time { return time.After(5 * time.Second) }

// AddProcess writes the pid into cgroup.procs of the path in every v1
// hierarchy that has it (v2: the one unified directory), and fails with
// NotFound when no hierarchy has it.
func TestAddProcess(t *testing.T) {
	v1 := t.TempDir()
	write(t, filepath.Join(v1, "memory/shims"), "cgroup.procs", "")
	write(t, filepath.Join(v1, "pids/shims"), "cgroup.procs", "")
	write(t, filepath.Join(v1, "unified/shims"), "cgroup.procs", "") // hybrid: not a controller hierarchy
	os.MkdirAll(filepath.Join(v1, "cpu"), 0o755)                     // a hierarchy without the path
	if err := AddProcess(v1, "/shims", 4242); err != nil {
		t.Fatal(err)
	}
	for h, want := range map[string]string{"memory": "4242", "pids": "4242", "unified": ""} {
		if got, _ := os.ReadFile(filepath.Join(v1, h, "shims", "cgroup.procs")); string(got) != want {
			t.Errorf("%s/shims/cgroup.procs = %q, want %q", h, got, want)
		}
	}
	if err := AddProcess(v1, "/missing", 4242); !errdefs.IsNotFound(err) {
		t.Errorf("missing cgroup: %v, want NotFound", err)
	}

	v2 := t.TempDir()
	write(t, v2, "cgroup.controllers", "cpu memory pids\n")
	write(t, filepath.Join(v2, "shims"), "cgroup.procs", "")
	if err := AddProcess(v2, "/shims", 77); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(filepath.Join(v2, "shims", "cgroup.procs")); string(got) != "77" {
		t.Errorf("v2 cgroup.procs = %q, want 77", got)
	}
	// Pid 0 in cgroup.procs would move the writer itself: refused, nothing written.
	write(t, filepath.Join(v2, "pod"), "cgroup.procs", "")
	for _, pid := range []int{0, -1} {
		if err := AddProcess(v2, "/pod", pid); !errdefs.IsInvalidArgument(err) {
			t.Errorf("AddProcess of pid %d: %v, want InvalidArgument", pid, err)
		}
	}
	if got, _ := os.ReadFile(filepath.Join(v2, "pod", "cgroup.procs")); len(got) != 0 {
		t.Errorf("a refused pid wrote %q", got)
	}
}

// Every memory.stat key the metrics carry lands in its own field, named in
// containerd's metrics protos (pgpgin is v1's pg_pg_in, ...), for v1 and v2.
// Each key gets a value of its own, so a key sent to the wrong field shows.
func TestMemoryStatKeysLandInTheirFields(t *testing.T) {
	fill := func(t *testing.T, dir string, keys [][2]string) {
		var b strings.Builder
		for i, k := range keys {
			fmt.Fprintf(&b, "%s %d\n", k[0], 1000+i)
		}
		b.WriteString("a_key_no_field_holds 7\n")
		write(t, dir, "memory.stat", b.String())
	}
	check := func(t *testing.T, mem protoreflect.Message, keys [][2]string) {
		for i, k := range keys {
			fd := mem.Descriptor().Fields().ByName(protoreflect.Name(k[1]))
			if fd == nil {
				t.Fatalf("no field %s in %s", k[1], mem.Descriptor().FullName())
			}
			if got := mem.Get(fd).Uint(); got != uint64(1000+i) {
				t.Errorf("%s = %d, want %d (memory.stat's %s)", k[1], got, 1000+i, k[0])
			}
		}
	}
	t.Run("v1", func(t *testing.T) {
		root := t.TempDir()
		cg, err := Parse(root, []byte("9:memory:/c\n"), false)
		if err != nil {
			t.Fatal(err)
		}
		var keys [][2]string
		for _, k := range []string{"cache", "rss", "rss_huge", "mapped_file", "dirty", "writeback", "pgpgin", "pgpgout",
			"pgfault", "pgmajfault", "inactive_anon", "active_anon", "inactive_file", "active_file", "unevictable"} {
			field := map[string]string{"pgpgin": "pg_pg_in", "pgpgout": "pg_pg_out", "pgfault": "pg_fault", "pgmajfault": "pg_maj_fault"}[k]
			if field == "" {
				field = k
			}
			keys = append(keys, [2]string{k, field}, [2]string{"total_" + k, "total_" + field})
		}
		keys = append(keys, [2]string{"hierarchical_memory_limit", "hierarchical_memory_limit"},
			[2]string{"hierarchical_memsw_limit", "hierarchical_swap_limit"})
		// rss_huge's total is total_rss_huge: the pairs above name it so.
		fill(t, filepath.Join(root, "memory/c"), keys)
		var m cgroupsv1.Metrics
		decodeMetrics(t, cg, MetricsV1, &m)
		check(t, m.GetMemory().ProtoReflect(), keys)
	})
	t.Run("v2", func(t *testing.T) {
		root := t.TempDir()
		write(t, root, "cgroup.controllers", "memory\n")
		cg, err := Parse(root, []byte("0::/c\n"), true)
		if err != nil {
			t.Fatal(err)
		}
		var keys [][2]string
		for _, k := range []string{"anon", "file", "kernel_stack", "slab", "sock", "shmem", "file_mapped", "file_dirty",
			"file_writeback", "anon_thp", "inactive_anon", "active_anon", "inactive_file", "active_file", "unevictable",
			"slab_reclaimable", "slab_unreclaimable", "pgfault", "pgmajfault", "workingset_refault", "workingset_activate",
			"workingset_nodereclaim", "pgrefill", "pgscan", "pgsteal", "pgactivate", "pgdeactivate", "pglazyfree",
			"pglazyfreed", "thp_fault_alloc", "thp_collapse_alloc"} {
			keys = append(keys, [2]string{k, k})
		}
		fill(t, filepath.Join(root, "c"), keys)
		var m cgroupsv2.Metrics
		decodeMetrics(t, cg, MetricsV2, &m)
		check(t, m.GetMemory().ProtoReflect(), keys)
	})
}

// A paused watcher calls no notify, waits for one under way, and delivers
// what came meanwhile at Resume (an upgrade that was undone).
func TestOOMWatcherPause(t *testing.T) {
	d, cg := v2EventsCgroup(t, t.TempDir(), "c1")
	var w OOMWatcher
	defer w.Close()
	got := make(chan struct{}, 8)
	inNotify, release := make(chan struct{}, 8), make(chan struct{})
	blocking := true
	stop, err := w.Watch(cg, func() {
		if blocking {
			inNotify <- struct{}{}
			<-release
		}
		got <- struct{}{}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	write(t, d, "memory.events", "oom_kill 1\n")
	select {
	case <-inNotify:
	case <-timeAfter():
		t.Fatal("no notification after memory.events changed")
	}
	paused := make(chan struct{})
	go func() { w.Pause(); close(paused) }()
	select {
	case <-paused:
		t.Fatal("Pause returned while a notify was under way")
	case <-time.After(100 * time.Millisecond):
	}
	blocking = false // read by notify only after release, below
	close(release)
	<-paused
	time.Sleep(100 * time.Millisecond) // a second inotify event of that write lands while paused
	for len(got) > 0 {
		<-got
	}
	write(t, d, "memory.events", "oom_kill 2\n")
	select {
	case <-got:
		t.Fatal("notified while paused")
	case <-time.After(200 * time.Millisecond):
	}
	w.Resume()
	select {
	case <-got:
	case <-timeAfter():
		t.Fatal("the notification that came while paused was not delivered at Resume")
	}
}

// After runs its function as a notification: held while the watcher is
// paused, delivered at Resume, and waited for by Pause while it runs.
func TestOOMWatcherAfterHonoursPause(t *testing.T) {
	var w OOMWatcher
	ran := make(chan struct{}, 2)
	w.Pause()
	w.After(time.Millisecond, func() { ran <- struct{}{} })
	select {
	case <-ran:
		t.Fatal("an After function ran while the watcher was paused")
	case <-time.After(100 * time.Millisecond):
	}
	w.Resume()
	select {
	case <-ran:
	case <-timeAfter():
		t.Fatal("the After function held by the pause did not run at Resume")
	}

	inside, release := make(chan struct{}), make(chan struct{})
	w.After(time.Millisecond, func() { close(inside); <-release })
	<-inside
	paused := make(chan struct{})
	go func() { w.Pause(); close(paused) }()
	select {
	case <-paused:
		t.Fatal("Pause returned while an After function was running")
	case <-time.After(100 * time.Millisecond):
	}
	close(release)
	<-paused
	w.Resume()
}

// v2 watches share one inotify instance: the kernel allows a user 128 by
// default, node-wide. Two watches of one cgroup (containers sharing it)
// share its watch descriptor: stopping one leaves the other notified.
func TestWatchOOMV2SharesOneInotifyInstance(t *testing.T) {
	root := t.TempDir()
	inotifyInstances := func() int {
		return fdtest.CountWhere(t, func(target string) bool { return target == "anon_inode:inotify" })
	}
	before := inotifyInstances()
	var w OOMWatcher
	defer w.Close()
	var d string
	var cg *Cgroup
	for _, name := range []string{"c1", "c2", "c3", "c4"} {
		d, cg = v2EventsCgroup(t, root, name)
		stop, err := w.Watch(cg, func() {})
		if err != nil {
			t.Fatal(err)
		}
		defer stop()
	}
	if n := inotifyInstances() - before; n != 1 {
		t.Errorf("four watched cgroups hold %d inotify instances, want 1", n)
	}

	first, second := make(chan struct{}, 8), make(chan struct{}, 8)
	stop1, err := w.Watch(cg, func() { first <- struct{}{} })
	if err != nil {
		t.Fatal(err)
	}
	defer stop1()
	stop2, err := w.Watch(cg, func() { second <- struct{}{} })
	if err != nil {
		t.Fatal(err)
	}
	write(t, d, "memory.events", "oom_kill 1\n")
	for _, ch := range []chan struct{}{first, second} {
		select {
		case <-ch:
		case <-timeAfter():
			t.Fatal("a watch of a cgroup watched twice was not notified")
		}
	}
	stop2()
	time.Sleep(100 * time.Millisecond) // let a second event of that write arrive
	for len(first) > 0 {
		<-first
	}
	write(t, d, "memory.events", "oom_kill 2\n")
	select {
	case <-first:
	case <-timeAfter():
		t.Fatal("stopping one watch of a cgroup ended the other's notifications")
	}
}

// A removed cgroup's watch ends: the kernel drops its inotify watch
// (IN_IGNORED), and the watcher forgets it.
func TestWatchOOMV2EndsWithTheCgroup(t *testing.T) {
	root := t.TempDir()
	d, cg := v2EventsCgroup(t, root, "c1")
	var w OOMWatcher
	defer w.Close()
	if _, err := w.Watch(cg, func() {}); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(d); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		w.mu.Lock()
		n, wds := len(w.watches), len(w.wds)
		w.mu.Unlock()
		if n == 0 && wds == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d watches and %d watch descriptors left after the cgroup went", n, wds)
		}
	}
}

// The inotify queue all v2 watches share can overflow (IN_Q_OVERFLOW, no
// watch descriptor): the events lost may have been anyone's, so every watch
// is notified, once.
func TestWatchOOMV2QueueOverflowNotifiesEveryWatch(t *testing.T) {
	w := &OOMWatcher{wds: map[int32][]uint64{1: {10}, 2: {20, 21}}}
	event := func(wd int32, mask uint32) []byte {
		b := make([]byte, unix.SizeofInotifyEvent)
		ev := (*unix.InotifyEvent)(unsafe.Pointer(&b[0]))
		ev.Wd, ev.Mask = wd, mask
		return b
	}
	tl := inotifyTally{seen: map[uint64]bool{}}
	w.tally(&tl, slices.Concat(event(1, unix.IN_MODIFY), event(-1, unix.IN_Q_OVERFLOW), event(1, unix.IN_MODIFY)))
	got := slices.Clone(tl.notified)
	slices.Sort(got)
	if !slices.Equal(got, []uint64{10, 20, 21}) || len(tl.gone) != 0 {
		t.Fatalf("after an overflow: notified %v, gone %v; want every watch once", got, tl.gone)
	}
}

// A container that has done no block IO still has a blkio section, with
// empty lists, as under the stock shim: Docker shows an absent section as
// null where it shows [] for the stock shim's.
func TestStatsV1BlkioWithoutIOIsPresent(t *testing.T) {
	root := t.TempDir()
	cg, err := Parse(root, []byte("8:blkio:/c\n"), false)
	if err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(root, "blkio/c"), "blkio.throttle.io_service_bytes_recursive", "Total 0\n")
	write(t, filepath.Join(root, "blkio/c"), "blkio.throttle.io_serviced_recursive", "Total 0\n")
	var m cgroupsv1.Metrics
	decodeMetrics(t, cg, MetricsV1, &m)
	if m.Blkio == nil {
		t.Fatal("no blkio section for a container without IO")
	}
	if n := len(m.Blkio.IoServiceBytesRecursive) + len(m.Blkio.IoServicedRecursive); n != 0 {
		t.Errorf("blkio entries %d, want none", n)
	}

	// Without the files (no blkio controller mounted there) there is no section.
	root = t.TempDir()
	cg, err = Parse(root, []byte("8:blkio:/c\n9:pids:/c\n"), false)
	if err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(root, "pids/c"), "pids.current", "1\n")
	m = cgroupsv1.Metrics{}
	decodeMetrics(t, cg, MetricsV1, &m)
	if m.Blkio != nil {
		t.Errorf("blkio section %v from a cgroup without blkio files", m.Blkio)
	}
}

// The statistics of a cgroup the runtime has removed while the task lives on
// (a checkpoint that stopped the container; the systemd driver's scope,
// removed with its last process) are NotFound under v1 as under v2:
// containerd's metrics collection skips a task whose Stats is NotFound, and
// logs any other error at every poll.
func TestStatsOfARemovedCgroupAreNotFound(t *testing.T) {
	for _, v2 := range []bool{false, true} {
		root := t.TempDir()
		proc := "4:memory:/c\n5:cpu,cpuacct:/c\n6:pids:/c\n7:blkio:/c\n0::/c\n"
		cg, err := Parse(root, []byte(proc), v2)
		if err != nil {
			t.Fatal(err)
		}
		_, _, err = cg.Metrics()
		if !errdefs.IsNotFound(err) {
			t.Errorf("v2 %v: statistics of a removed cgroup: %v, want NotFound", v2, err)
		}
	}
}

// Under v1 the systemd driver's scope goes with its last process in the
// hierarchies systemd manages (memory, cpu, pids, blkio...), but the
// directories runc made itself in the others (freezer, cpuset, net_cls,
// perf_event, hugetlb) stay until the runtime's delete: the statistics,
// read from the former only, are NotFound all the same.
func TestStatsOfARemovedCgroupWithOtherControllersLeftAreNotFound(t *testing.T) {
	root := t.TempDir()
	proc := "4:memory:/c\n5:cpu,cpuacct:/c\n6:pids:/c\n7:blkio:/c\n8:freezer:/c\n9:cpuset:/c\n1:name=systemd:/c\n"
	cg, err := Parse(root, []byte(proc), false)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []string{"freezer", "cpuset"} {
		if err := os.MkdirAll(filepath.Join(root, c, "c"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, err := cg.Metrics(); !errdefs.IsNotFound(err) {
		t.Errorf("statistics of a cgroup removed from every statistics hierarchy: %v, want NotFound", err)
	}
}

// The metrics of a removed cgroup carry the memory events last read, every
// key in its field, and oom_kill at least the kills reported; containerd's
// cgroups types decode them (containerd 2.x's CRI reads oom_kill there).
func TestMetricsOfRemoved(t *testing.T) {
	for _, tc := range []struct {
		name    string
		events  map[string]uint64
		kills   uint64
		wantOOM uint64
	}{
		{"read before the kill", map[string]uint64{"low": 1, "high": 2, "max": 3, "oom": 4, "oom_kill": 0, "oom_group_kill": 6, "sock_throttled": 7}, 1, 1},
		{"read after the kill", map[string]uint64{"low": 1, "high": 2, "max": 3, "oom": 4, "oom_kill": 5, "oom_group_kill": 6}, 1, 5},
		{"never read", nil, 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			data, url, err := (&Cgroup{V2: true}).MetricsOfRemoved(tc.events, tc.kills)
			if err != nil || url != MetricsV2 {
				t.Fatalf("MetricsOfRemoved: %q, %v; want %q", url, err, MetricsV2)
			}
			var m cgroupsv2.Metrics
			if err := proto.Unmarshal(data, &m); err != nil {
				t.Fatalf("containerd/cgroups cannot decode them: %v", err)
			}
			ev := m.GetMemoryEvents()
			if ev == nil {
				t.Fatal("no memory events")
			}
			want := &cgroupsv2.MemoryEvents{Low: tc.events["low"], High: tc.events["high"], Max: tc.events["max"],
				Oom: tc.events["oom"], OomKill: tc.wantOOM, OomGroupKill: tc.events["oom_group_kill"]}
			if !proto.Equal(ev, want) {
				t.Errorf("memory events %v, want %v", ev, want)
			}
			if m.GetCPU() != nil || m.GetMemory() != nil || m.GetPids() != nil {
				t.Errorf("figures no cgroup was read for: %v", &m)
			}
		})
	}
}

// Under v1 the metrics of a removed cgroup carry the kills reported as
// memory.oom_control's oom_kill (where containerd 2.x's CRI reads a v1
// kill), and nothing else.
func TestMetricsOfRemovedV1(t *testing.T) {
	for _, kills := range []uint64{0, 2} {
		data, url, err := (&Cgroup{}).MetricsOfRemoved(map[string]uint64{"max": 3}, kills)
		if err != nil || url != MetricsV1 {
			t.Fatalf("MetricsOfRemoved: %q, %v; want %q", url, err, MetricsV1)
		}
		var m cgroupsv1.Metrics
		if err := proto.Unmarshal(data, &m); err != nil {
			t.Fatalf("containerd/cgroups cannot decode them: %v", err)
		}
		if got := m.GetMemoryOomControl().GetOomKill(); got != kills {
			t.Errorf("oom_kill %d, want %d", got, kills)
		}
		m.MemoryOomControl = nil
		if !proto.Equal(&m, &cgroupsv1.Metrics{}) {
			t.Errorf("figures no cgroup was read for: %v", &m)
		}
	}
}
