package integration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/containerd/cgroups/v3/cgroup1/stats"
	apievents "github.com/containerd/containerd/api/events"
	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/oci"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/protobuf/proto"

	"github.com/example/containerd-shim-example-v2/integration/harness"
)

// cgroupV1Root is where this host mounts its cgroup v1 hierarchies, one per controller.
const cgroupV1Root = "/sys/fs/cgroup"

// requireCgroupV1 skips (saying why) on a host whose memory controller is not on cgroup v1:
// the file names checked below are v1's.
func requireCgroupV1(t *testing.T) {
	t.Helper()
	if _, err := os.Stat(filepath.Join(cgroupV1Root, "memory", "memory.limit_in_bytes")); err != nil {
		t.Skipf("host has no cgroup v1 memory hierarchy at %s/memory (%v); these checks read v1 files", cgroupV1Root, err)
	}
}

// cgroupV1Dir returns the directory of pid's cgroup for a v1 controller, from
// /proc/<pid>/cgroup ("id:controller[,controller]:/path").
func cgroupV1Dir(t *testing.T, pid uint32, controller string) string {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		t.Fatalf("read cgroups of pid %d: %v", pid, err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		for _, c := range strings.Split(parts[1], ",") {
			if c == controller {
				return filepath.Join(cgroupV1Root, parts[1], parts[2])
			}
		}
	}
	t.Fatalf("pid %d is in no %s cgroup:\n%s", pid, controller, data)
	return ""
}

func readCgroupInt(t *testing.T, dir, file string) int64 {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, file))
	if err != nil {
		t.Fatalf("read %s: %v", file, err)
	}
	v, err := strconv.ParseInt(strings.TrimSpace(string(data)), 10, 64)
	if err != nil {
		t.Fatalf("%s/%s: %v", dir, file, err)
	}
	return v
}

// Update: new memory and CPU limits for a running container show in its cgroup.
func TestUpdateResources(t *testing.T) {
	requireCgroupV1(t)
	forEachFlavor(t, func(t *testing.T, d *harness.Daemon) {
		ctx, _ := d.NewNamespace(t)
		ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		ctr := newContainer(t, ctx, d, "r1", loopArgs)
		task, _ := startTask(t, ctx, ctr, cio.NullIO)
		memDir := cgroupV1Dir(t, task.Pid(), "memory")
		cpuDir := cgroupV1Dir(t, task.Pid(), "cpu")
		if memDir == filepath.Join(cgroupV1Root, "memory") {
			t.Fatalf("container init is in the root memory cgroup")
		}

		const (
			limit  = int64(96 << 20)
			quota  = int64(25000)
			period = uint64(100000)
		)
		if got := readCgroupInt(t, memDir, "memory.limit_in_bytes"); got == limit {
			t.Fatalf("memory limit is already %d before the update; the test proves nothing", got)
		}
		l, q, p := limit, quota, period
		err := task.Update(ctx, containerd.WithResources(&specs.LinuxResources{
			Memory: &specs.LinuxMemory{Limit: &l},
			CPU:    &specs.LinuxCPU{Quota: &q, Period: &p},
		}))
		if err != nil {
			t.Fatalf("update: %v", err)
		}
		if got := readCgroupInt(t, memDir, "memory.limit_in_bytes"); got != limit {
			t.Errorf("%s/memory.limit_in_bytes = %d after the update, want %d", memDir, got, limit)
		}
		if got := readCgroupInt(t, cpuDir, "cpu.cfs_quota_us"); got != quota {
			t.Errorf("%s/cpu.cfs_quota_us = %d after the update, want %d", cpuDir, got, quota)
		}
		if got := readCgroupInt(t, cpuDir, "cpu.cfs_period_us"); got != int64(period) {
			t.Errorf("%s/cpu.cfs_period_us = %d after the update, want %d", cpuDir, got, period)
		}
		expectRunning(t, ctx, task, "after the update")
	})
}

// Stats: `ctr task metrics` prints memory, cpu and pids rows; the Go client gets cgroup v1
// metrics that decode, with memory in use and at least one pid.
func TestMetrics(t *testing.T) {
	requireCgroupV1(t)
	forEachFlavor(t, func(t *testing.T, d *harness.Daemon) {
		ctx, _ := d.NewNamespace(t)
		ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		const id = "m1"
		ctr := newContainer(t, ctx, d, id, loopArgs)
		task, _ := startTask(t, ctx, ctr, cio.NullIO)

		// Both ctr versions print a table of "METRIC VALUE" rows for v1 metrics.
		out := ctrOK(t, ctx, d, "task", "metrics", id)
		rows := map[string]string{}
		for _, line := range strings.Split(out, "\n") {
			if f := strings.Fields(line); len(f) >= 2 {
				rows[f[0]] = f[1]
			}
		}
		for _, name := range []string{"memory.usage_in_bytes", "cpuacct.usage", "pids.current"} {
			v, err := strconv.ParseInt(rows[name], 10, 64)
			if err != nil || v < 1 {
				t.Errorf("ctr task metrics: row %s = %q, want a positive number; output:\n%s", name, rows[name], out)
			}
		}

		m, err := task.Metrics(ctx)
		if err != nil {
			t.Fatalf("metrics: %v", err)
		}
		const wantURL = "io.containerd.cgroups.v1.Metrics"
		if url := m.GetData().GetTypeUrl(); url != wantURL {
			t.Fatalf("metrics type %q, want %q", url, wantURL)
		}
		var s stats.Metrics
		if err := proto.Unmarshal(m.GetData().GetValue(), &s); err != nil {
			t.Fatalf("decode %s: %v", wantURL, err)
		}
		if s.GetMemory().GetUsage().GetUsage() == 0 {
			t.Errorf("memory usage 0 in %v", s.GetMemory())
		}
		if s.GetPids().GetCurrent() < 1 {
			t.Errorf("pids.current %d, want >= 1", s.GetPids().GetCurrent())
		}
	})
}

// memoryHogArgs make a container allocate memory until something stops it.
var memoryHogArgs = []string{"sh", "-c", `x=aaaaaaaa; while :; do x="$x$x"; done`}

// OOM: a container that allocates past its 32 MiB limit is killed (137) and /tasks/oom is
// published before its /tasks/exit.
func TestOOMKill(t *testing.T) {
	requireCgroupV1(t)
	forEachFlavor(t, func(t *testing.T, d *harness.Daemon) {
		ctx, ns := d.NewNamespace(t)
		ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
		defer cancel()
		const id = "oom1"
		evs := subscribeTaskEvents(t, ctx, d, ns)
		ctr := newContainer(t, ctx, d, id, memoryHogArgs,
			oci.WithMemoryLimit(32<<20))
		_, statusC := startTask(t, ctx, ctr, cio.NullIO)
		if code := exitCode(t, ctx, statusC); code != 137 {
			t.Errorf("exit status %d, want 137 (SIGKILL by the OOM killer)", code)
		}
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
		expectOOMScope(t, d, ns, id, "container")
	})
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

// OOM under a parent's limit: the container has no memory limit of its own, but its cgroup
// sits under a parent limited to 32 MiB (as a pod's or kubepods' cgroup would be). It is
// OOM-killed (137, /tasks/oom before /tasks/exit), and the shim reports that the limit hit
// was an ancestor's, not the container's.
func TestOOMKillByParentCgroup(t *testing.T) {
	requireCgroupV1(t)
	forEachFlavor(t, func(t *testing.T, d *harness.Daemon) {
		parent := "/ex-oomp-" + harness.RandID(8)
		if err := os.Mkdir(filepath.Join(cgroupV1Root, "memory", parent), 0o755); err != nil {
			t.Fatal(err)
		}
		// Registered before the namespace, so it runs after the container is gone.
		t.Cleanup(func() {
			if err := harness.RemoveCgroup(parent); err != nil {
				t.Errorf("remove parent cgroup %s: %v", parent, err)
			}
		})
		if err := os.WriteFile(filepath.Join(cgroupV1Root, "memory", parent, "memory.limit_in_bytes"), []byte("33554432"), 0o644); err != nil {
			t.Fatal(err)
		}
		ctx, ns := d.NewNamespace(t)
		ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
		defer cancel()
		const id = "oom2"
		evs := subscribeTaskEvents(t, ctx, d, ns)
		ctr := newContainer(t, ctx, d, id, memoryHogArgs,
			oci.WithCgroup(parent+"/"+id))
		_, statusC := startTask(t, ctx, ctr, cio.NullIO)
		if code := exitCode(t, ctx, statusC); code != 137 {
			t.Errorf("exit status %d, want 137 (SIGKILL by the OOM killer)", code)
		}
		got := evs.collect(t, 10*time.Second, "/tasks/exit", func(e taskEvent) bool { return e.Topic == "/tasks/exit" })
		if !slices.ContainsFunc(got, func(e taskEvent) bool { return e.Topic == "/tasks/oom" }) {
			t.Errorf("events %v, want /tasks/oom before /tasks/exit", got)
		}
		expectOOMScope(t, d, ns, id, "ancestor")
	})
}
