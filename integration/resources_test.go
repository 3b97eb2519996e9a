package integration

import (
	"context"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	v1stats "github.com/containerd/cgroups/v3/cgroup1/stats"
	v2stats "github.com/containerd/cgroups/v3/cgroup2/stats"
	apievents "github.com/containerd/containerd/api/events"
	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/oci"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/protobuf/proto"

	"github.com/example/containerd-shim-example-v2/integration/harness"
)

// Update: new memory, CPU and pids limits for a running container show in its cgroup's
// files (v1: memory.limit_in_bytes, cpu.cfs_quota_us/cfs_period_us, pids.max; v2:
// memory.max, cpu.max, pids.max).
func TestUpdateResources(t *testing.T) {
	forEachFlavor(t, func(t *testing.T, d *harness.Daemon) {
		ctx, _ := d.NewNamespace(t)
		ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		ctr := newContainer(t, ctx, d, "r1", loopArgs)
		task, _ := startTask(t, ctx, ctr, cio.NullIO)
		cg := cgroupOf(t, task.Pid())

		const (
			limit  = int64(96 << 20)
			quota  = int64(25000)
			period = uint64(100000)
			pids   = int64(77)
		)
		if got := cg.memoryLimit(t); got == limit {
			t.Fatalf("memory limit is already %d before the update; the test proves nothing", got)
		}
		l, q, p, n := limit, quota, period, pids
		err := task.Update(ctx, containerd.WithResources(&specs.LinuxResources{
			Memory: &specs.LinuxMemory{Limit: &l},
			CPU:    &specs.LinuxCPU{Quota: &q, Period: &p},
			Pids:   &specs.LinuxPids{Limit: &n},
		}))
		if err != nil {
			t.Fatalf("update: %v", err)
		}
		if got := cg.memoryLimit(t); got != limit {
			t.Errorf("memory limit %d after the update, want %d", got, limit)
		}
		if cg.v2 {
			if got, want := cg.read(t, "cpu", "", "cpu.max"), fmt.Sprintf("%d %d", quota, period); got != want {
				t.Errorf("cpu.max %q after the update, want %q", got, want)
			}
		} else {
			if got := cg.readInt(t, "cpu", "cpu.cfs_quota_us", ""); got != quota {
				t.Errorf("cpu.cfs_quota_us = %d after the update, want %d", got, quota)
			}
			if got := cg.readInt(t, "cpu", "cpu.cfs_period_us", ""); got != int64(period) {
				t.Errorf("cpu.cfs_period_us = %d after the update, want %d", got, period)
			}
		}
		if got := cg.readInt(t, "pids", "pids.max", "pids.max"); got != pids {
			t.Errorf("pids.max = %d after the update, want %d", got, pids)
		}
		expectRunning(t, ctx, task, "after the update")
	})
}

// Stats: `ctr task metrics` prints memory, cpu and pids rows; the Go client gets the
// metrics of the host's cgroup version (io.containerd.cgroups.v1.Metrics or .v2.Metrics),
// and their numbers agree with the cgroup's files read in the same test. On v2 they also
// carry memory.events counters, hugetlb per page size, and PSI pressure (cpu, memory, io;
// some and full) where the kernel has it.
func TestMetrics(t *testing.T) {
	forEachFlavor(t, func(t *testing.T, d *harness.Daemon) {
		ctx, _ := d.NewNamespace(t)
		ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		const id = "m1"
		ctr := newContainer(t, ctx, d, id, loopArgs)
		task, _ := startTask(t, ctx, ctr, cio.NullIO)
		cg := cgroupOf(t, task.Pid())

		// ctr prints a table of "METRIC VALUE" rows, named after v1's or v2's files.
		out := ctrOK(t, ctx, d, "task", "metrics", id)
		rows := map[string]string{}
		for _, line := range strings.Split(out, "\n") {
			if f := strings.Fields(line); len(f) >= 2 {
				rows[f[0]] = f[1]
			}
		}
		names := []string{"memory.usage_in_bytes", "cpuacct.usage", "pids.current"}
		if cg.v2 {
			names = []string{"memory.usage", "cpu.usage_usec", "pids.current"}
		}
		for _, name := range names {
			v, err := strconv.ParseInt(rows[name], 10, 64)
			if err != nil || v < 1 {
				t.Errorf("ctr task metrics: row %s = %q, want a positive number; output:\n%s", name, rows[name], out)
			}
		}

		m, err := task.Metrics(ctx)
		if err != nil {
			t.Fatalf("metrics: %v", err)
		}
		wantURL := "io.containerd.cgroups.v1.Metrics"
		if cg.v2 {
			wantURL = "io.containerd.cgroups.v2.Metrics"
		}
		if url := m.GetData().GetTypeUrl(); url != wantURL {
			t.Fatalf("metrics type %q, want %q", url, wantURL)
		}
		pidsNow := cg.readInt(t, "pids", "pids.current", "pids.current")
		if !cg.v2 {
			var s v1stats.Metrics
			if err := proto.Unmarshal(m.GetData().GetValue(), &s); err != nil {
				t.Fatalf("decode %s: %v", wantURL, err)
			}
			if s.GetMemory().GetUsage().GetUsage() == 0 {
				t.Errorf("memory usage 0 in %v", s.GetMemory())
			}
			if got := int64(s.GetPids().GetCurrent()); !samePids(got, pidsNow) {
				t.Errorf("pids.current %d, the file says %d", got, pidsNow)
			}
			return
		}
		var s v2stats.Metrics
		if err := proto.Unmarshal(m.GetData().GetValue(), &s); err != nil {
			t.Fatalf("decode %s: %v", wantURL, err)
		}
		checkV2Metrics(t, cg, &s)
	})
}

// samePids compares the metrics' pids.current with the file's, read a moment
// apart: the test's container (loopArgs) is its shell, plus a sleep most of the
// time, so either may have caught the moment between two sleeps (1 or 2; on a
// slow emulated guest that moment is long enough to be caught).
func samePids(got, file int64) bool {
	return got >= 1 && file >= 1 && got-file <= 1 && file-got <= 1
}

// checkV2Metrics compares v2 metrics with the cgroup's files read right after them:
// counters that only grow may have grown since, gauges must be in a sane range.
func checkV2Metrics(t *testing.T, cg cgroupFS, s *v2stats.Metrics) {
	t.Helper()
	if got, file := int64(s.GetPids().GetCurrent()), cg.readInt(t, "pids", "", "pids.current"); !samePids(got, file) {
		t.Errorf("pids.current %d, the file says %d", got, file)
	}
	usage, file := s.GetCPU().GetUsageUsec(), uint64(fileKV(t, cg, "cpu.stat")["usage_usec"])
	if usage == 0 || usage > file {
		t.Errorf("cpu usage_usec %d, want positive and at most the file's later %d", usage, file)
	}
	if got, file := s.GetMemory().GetUsage(), cg.readInt(t, "memory", "", "memory.current"); got == 0 || math.Abs(float64(got)-float64(file)) > 4<<20 {
		t.Errorf("memory usage %d, memory.current says %d", got, file)
	}
	if got, file := s.GetMemory().GetAnon(), fileKV(t, cg, "memory.stat")["anon"]; got == 0 || math.Abs(float64(got)-float64(file)) > 4<<20 {
		t.Errorf("memory anon %d, memory.stat says %d", got, file)
	}
	ev := fileKV(t, cg, "memory.events")
	if e := s.GetMemoryEvents(); e == nil || int64(e.GetOomKill()) != ev["oom_kill"] || int64(e.GetMax()) != ev["max"] {
		t.Errorf("memory events %v, memory.events says %v", s.GetMemoryEvents(), ev)
	}
	hugetlb, _ := filepath.Glob(filepath.Join(cg.dir("hugetlb"), "hugetlb.*[^d].current"))
	var sizes []string
	for _, f := range hugetlb {
		if size := strings.TrimSuffix(strings.TrimPrefix(filepath.Base(f), "hugetlb."), ".current"); !strings.Contains(size, ".") {
			sizes = append(sizes, size)
		}
	}
	var got []string
	for _, h := range s.GetHugetlb() {
		got = append(got, h.GetPagesize())
	}
	slices.Sort(sizes)
	slices.Sort(got)
	if !slices.Equal(got, sizes) {
		t.Errorf("hugetlb page sizes %v, the cgroup has %v", got, sizes)
	}
	for name, psi := range map[string]*v2stats.PSIStats{"cpu": s.GetCPU().GetPSI(), "memory": s.GetMemory().GetPSI(), "io": s.GetIo().GetPSI()} {
		data, err := os.ReadFile(filepath.Join(cg.dir(""), name+".pressure"))
		if err != nil {
			if psi != nil {
				t.Errorf("%s PSI %v, but %s.pressure cannot be read: %v", name, psi, name, err)
			}
			continue
		}
		if psi.GetSome() == nil || psi.GetFull() == nil {
			t.Errorf("%s PSI %v, want some and full (%s.pressure: %q)", name, psi, name, data)
			continue
		}
		for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
			f := strings.Fields(line)
			total, _ := strconv.ParseUint(strings.TrimPrefix(f[len(f)-1], "total="), 10, 64)
			p := psi.GetSome()
			if f[0] == "full" {
				p = psi.GetFull()
			}
			if p.GetTotal() > total {
				t.Errorf("%s PSI %s total %d, more than the file's later %d", name, f[0], p.GetTotal(), total)
			}
		}
	}
}

// fileKV reads a v2 "key value" file of the cgroup.
func fileKV(t *testing.T, cg cgroupFS, name string) map[string]int64 {
	t.Helper()
	out := map[string]int64{}
	for _, line := range strings.Split(cg.read(t, "", "", name), "\n") {
		if k, v, ok := strings.Cut(line, " "); ok {
			out[k], _ = strconv.ParseInt(v, 10, 64)
		}
	}
	return out
}

// memoryHogArgs make a container allocate memory until something stops it.
var memoryHogArgs = []string{"sh", "-c", `x=aaaaaaaa; while :; do x="$x$x"; done`}

// OOM: a container that allocates past its own limit is killed (137), /tasks/oom is
// published before its /tasks/exit, and the shim says the container's own limit was hit.
// Two shapes of limit: memory only (ctr run --memory-limit), and memory with memory+swap
// equal to it (what kubelet sets; on v1 it leaves no failcnt behind, see cgroup/oomscope.go).
func TestOOMKill(t *testing.T) {
	forEachFlavor(t, func(t *testing.T, d *harness.Daemon) {
		for _, shape := range []struct {
			name string
			opts []oci.SpecOpts
		}{
			{"memory", []oci.SpecOpts{oci.WithMemoryLimit(32 << 20)}},
			{"memory-and-swap", []oci.SpecOpts{oci.WithMemoryLimit(15 << 20), oci.WithMemorySwap(15 << 20)}},
		} {
			t.Run(shape.name, func(t *testing.T) {
				ctx, ns := d.NewNamespace(t)
				ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
				defer cancel()
				const id = "oom1"
				evs := subscribeTaskEvents(t, ctx, d, ns)
				ctr := newContainer(t, ctx, d, id, memoryHogArgs, shape.opts...)
				_, statusC := startTask(t, ctx, ctr, cio.NullIO)
				if code := exitCode(t, ctx, statusC); code != 137 {
					t.Errorf("exit status %d, want 137 (SIGKILL by the OOM killer)", code)
				}
				expectOOMBeforeExit(t, evs, id)
				expectOOMScope(t, d, ns, id, "container")
			})
		}
	})
}

// expectOOMBeforeExit collects events up to /tasks/exit and checks that /tasks/oom of
// container id came first, and that the exit says 137.
func expectOOMBeforeExit(t *testing.T, evs *eventStream, id string) {
	t.Helper()
	got := evs.collect(t, 10*time.Second, "/tasks/exit", func(e taskEvent) bool { return e.Topic == "/tasks/exit" })
	oomAt := -1
	for i, e := range got {
		switch x := e.Event.(type) {
		case *apievents.TaskOOM:
			if x.ContainerID != id {
				t.Errorf("/tasks/oom: container %q, want %q", x.ContainerID, id)
			}
			if oomAt < 0 {
				oomAt = i
			}
		case *apievents.TaskExit:
			if x.ContainerID != id || x.ID != id || x.ExitStatus != 137 {
				t.Errorf("/tasks/exit: container %q id %q status %d, want %q %q 137", x.ContainerID, x.ID, x.ExitStatus, id, id)
			}
		}
	}
	if oomAt < 0 {
		t.Errorf("no /tasks/oom before /tasks/exit; events %v", got)
	}
}

// expectOOMScope checks, through the shim's introspection, that the task saw an OOM kill
// and which limit caused it (io.example.v2 only: the stock shim has no such report).
func expectOOMScope(t *testing.T, d *harness.Daemon, ns, id, scope string) {
	t.Helper()
	if harness.Runtime() != "io.example.v2" {
		return
	}
	for _, task := range introspect(t, d.BundleDir(ns, id)).Tasks {
		if task.ID == id {
			if task.OomKills < 1 || task.LastOomScope != scope {
				t.Errorf("introspection of %s: %d OOM kills, last limit %q; want at least one, by the %s limit", id, task.OomKills, task.LastOomScope, scope)
			}
			return
		}
	}
	t.Errorf("introspection does not list %s", id)
}

// OOM under a parent's limit: the container's cgroup sits under a parent limited to 32 MiB
// (as a pod's or kubepods' cgroup would be). It is OOM-killed (137, /tasks/oom before
// /tasks/exit), and the shim reports that the limit hit was an ancestor's, not the
// container's: with no limit of its own, and with a 64 MiB one it never reaches.
func TestOOMKillByParentCgroup(t *testing.T) {
	forEachFlavor(t, func(t *testing.T, d *harness.Daemon) {
		for _, shape := range []struct {
			name string
			opts []oci.SpecOpts
		}{
			{"unlimited", nil},
			{"own-limit-above", []oci.SpecOpts{oci.WithMemoryLimit(64 << 20), oci.WithMemorySwap(64 << 20)}},
		} {
			t.Run(shape.name, func(t *testing.T) {
				parent := "/ex-oomp-" + harness.RandID(8)
				// Registered before the namespace, so it is removed after the container.
				newParentCgroup(t, parent, 32<<20)
				ctx, ns := d.NewNamespace(t)
				ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
				defer cancel()
				const id = "oom2"
				evs := subscribeTaskEvents(t, ctx, d, ns)
				ctr := newContainer(t, ctx, d, id, memoryHogArgs, append(shape.opts, oci.WithCgroup(parent+"/"+id))...)
				_, statusC := startTask(t, ctx, ctr, cio.NullIO)
				if code := exitCode(t, ctx, statusC); code != 137 {
					t.Errorf("exit status %d, want 137 (SIGKILL by the OOM killer)", code)
				}
				expectOOMBeforeExit(t, evs, id)
				expectOOMScope(t, d, ns, id, "ancestor")
			})
		}
	})
}
