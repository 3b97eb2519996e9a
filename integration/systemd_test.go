package integration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	v1stats "github.com/containerd/cgroups/v3/cgroup1/stats"
	v2stats "github.com/containerd/cgroups/v3/cgroup2/stats"
	"github.com/containerd/containerd/api/types"
	"github.com/containerd/containerd/api/types/runc/options"
	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/oci"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/example/containerd-shim-example-v2/integration/harness"
)

// runc's systemd cgroup driver (SystemdCgroup = true), which most Kubernetes nodes on
// cgroup v2 run, kubelet with its systemd driver beside it (and older nodes on v1, systemd's
// hybrid layout: Ubuntu 20.04, EL 8): the runtime asks systemd for a
// transient scope per container, in a slice named by the cgroups path ("slice:prefix:name",
// kubelet's pod slices "kubepods-burstable-pod<uid>.slice"), and systemd makes the cgroup.
// The shim finds the container's cgroup where systemd put it: statistics, the OOM watch,
// pause, limits and Pids work on it; a task's scope is gone after its delete; a pod's slice
// can be stopped after the pod is removed (kubelet stops it), with nothing of the shim left
// in it (the pod holder of the shim sandboxer lives there too).
//
// The handlers' tables say SystemdCgroup = true. containerd 1.6 drops that line for a
// runtime type other than runc's (it keeps only ConfigPath), so under 1.6 the pods run on
// the shim's reading of the cgroups path (package cgroupdriver); 2.4 passes the table on.
//
// It needs systemd as the init: `make test-systemd` boots the cgroup v2 guest with systemd
// as PID 1 (docs/cgroup2.md), once on v2 and once on v1. Elsewhere it skips.
func TestSystemdCgroupDriver(t *testing.T) {
	if why := systemdMissing(); why != "" {
		t.Skip(why)
	}
	for _, flavor := range harness.AllFlavors {
		t.Run("containerd-"+flavor, func(t *testing.T) {
			t.Run("task", func(t *testing.T) { testSystemdTask(t, daemonFor(t, flavor)) })
			t.Run("cri-pod", func(t *testing.T) {
				handlers := []harness.CRIHandler{{Name: "example-systemd", Options: []string{"SystemdCgroup = true"}}}
				if flavor != harness.Flavor16 && harness.Runtime() == "io.example.v2" {
					// The stock shim cannot be a sandboxer (it looks for the pod's config.json).
					handlers = append(handlers, harness.CRIHandler{Name: "example-systemd-shim", Sandboxer: "shim", Options: []string{"SystemdCgroup = true"}})
				}
				var opts []harness.DaemonOption
				for _, h := range handlers {
					opts = append(opts, harness.WithCRIHandler(h))
				}
				d, cri := harness.StartCRIDaemon(t, flavor, opts...)
				for _, h := range handlers {
					t.Run(h.Name, func(t *testing.T) { testSystemdPod(t, d, cri, h.Name) })
				}
			})
		})
	}
}

// systemdOOMHogs is how many OOM-killed CRI containers testSystemdPod makes, one after
// the other; every one must be reported OOMKilled.
const systemdOOMHogs = 2

// systemdMissing says why systemd cannot take cgroup requests here ("" when it can).
func systemdMissing() string {
	if !harness.SystemdBooted() {
		return "systemd is not the init here (make test-systemd runs this in a guest where it is)"
	}
	return ""
}

// unitCgroup is the cgroup directory systemd makes for a unit, path being the unit's
// slices and its own name: in the unified tree on v2, in the memory hierarchy on v1.
func unitCgroup(path ...string) string {
	if cgroupV2() {
		return filepath.Join(append([]string{cgroupRoot}, path...)...)
	}
	return filepath.Join(append([]string{cgroupRoot, "memory"}, path...)...)
}

// memoryMaxProperty is the unit property runc's systemd driver sets for a memory limit:
// MemoryMax on v2, MemoryLimit (its v1 name) on v1.
func memoryMaxProperty() string {
	if cgroupV2() {
		return "MemoryMax"
	}
	return "MemoryLimit"
}

// metricsOOMKills decodes a task's metrics (v1 or v2) and returns their OOM kill count and
// memory limit.
func metricsOOMKills(t *testing.T, m *types.Metric) (kills, limit uint64) {
	t.Helper()
	if cgroupV2() {
		var s v2stats.Metrics
		if err := proto.Unmarshal(m.GetData().GetValue(), &s); err != nil {
			t.Fatalf("decode metrics %s: %v", m.GetData().GetTypeUrl(), err)
		}
		return s.GetMemoryEvents().GetOomKill(), s.GetMemory().GetUsageLimit()
	}
	var s v1stats.Metrics
	if err := proto.Unmarshal(m.GetData().GetValue(), &s); err != nil {
		t.Fatalf("decode metrics %s: %v", m.GetData().GetTypeUrl(), err)
	}
	return s.GetMemoryOomControl().GetOomKill(), s.GetMemory().GetUsage().GetLimit()
}

// unitProperty is one property of a unit (`systemctl show -p`).
func unitProperty(t *testing.T, unit, property string) string {
	t.Helper()
	out, err := harness.Systemctl("show", "-p", property, "--value", unit)
	if err != nil {
		t.Fatalf("systemctl show %s: %v (%s)", unit, err, out)
	}
	return out
}

// A task of the Go client with SystemdCgroup and a "slice:prefix:name" cgroups path.
func testSystemdTask(t *testing.T, d *harness.Daemon) {
	ctx, ns := d.NewNamespace(t)
	ctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	systemdOpts := withRuncOptions(&options.Options{SystemdCgroup: true})

	const id = "sd1"
	name := ns + "-" + id
	unit := "ex-sd-" + name + ".scope"
	ctr := newContainer(t, ctx, d, id, loopArgs, oci.WithCgroup("system.slice:ex-sd:"+name), oci.WithMemoryLimit(64<<20))
	task, statusC := startTask(t, ctx, ctr, cio.NullIO, systemdOpts)
	cg := cgroupOf(t, task.Pid())
	if want := unitCgroup("system.slice", unit); cg.dir("memory") != want {
		t.Fatalf("the container's cgroup is %s, want systemd's scope %s", cg.dir("memory"), want)
	}
	if got := unitProperty(t, unit, "ActiveState"); got != "active" {
		t.Errorf("scope %s: ActiveState %q, want active", unit, got)
	}
	if got := cg.memoryLimit(t); got != 64<<20 {
		t.Errorf("memory limit of the scope %d, want %d", got, 64<<20)
	}

	m, err := task.Metrics(ctx)
	if err != nil {
		t.Fatalf("metrics: %v", err)
	}
	if cgroupV2() {
		var s v2stats.Metrics
		if err := proto.Unmarshal(m.GetData().GetValue(), &s); err != nil {
			t.Fatalf("decode metrics %s: %v", m.GetData().GetTypeUrl(), err)
		}
		checkV2Metrics(t, cg, &s)
	}
	if _, limit := metricsOOMKills(t, m); limit != 64<<20 {
		t.Errorf("metrics: memory limit %d, want the scope's %d", limit, 64<<20)
	}

	pids, err := task.Pids(ctx)
	if err != nil || !containsPid(pids, task.Pid()) {
		t.Errorf("Pids: %v, %v; want the init %d among them", pids, err, task.Pid())
	}

	limit, n := int64(96<<20), int64(77)
	if err := task.Update(ctx, containerd.WithResources(&specs.LinuxResources{
		Memory: &specs.LinuxMemory{Limit: &limit},
		Pids:   &specs.LinuxPids{Limit: &n},
	})); err != nil {
		t.Fatalf("update: %v", err)
	}
	if got := cg.memoryLimit(t); got != limit {
		t.Errorf("memory limit %d after the update, want %d", got, limit)
	}
	if got := cg.readInt(t, "pids", "pids.max", "pids.max"); got != n {
		t.Errorf("pids.max %d after the update, want %d", got, n)
	}
	if got := unitProperty(t, unit, memoryMaxProperty()); got != strconv.FormatInt(limit, 10) {
		// runc's driver sets the unit's property too, so that systemd does not undo the
		// limit the next time it writes the scope's files.
		t.Errorf("scope %s: %s %q after the update, want %d", unit, memoryMaxProperty(), got, limit)
	}

	if err := task.Pause(ctx); err != nil {
		t.Fatalf("pause: %v", err)
	}
	if got := frozenState(t, cg); got != "frozen" {
		t.Errorf("freezer after Pause: %s, want frozen", got)
	}
	if err := task.Resume(ctx); err != nil {
		t.Fatalf("resume: %v", err)
	}
	if got := frozenState(t, cg); got != "thawed" {
		t.Errorf("freezer after Resume: %s, want thawed", got)
	}
	if code := runExec(t, ctx, task, "e1", "true"); code != 0 {
		t.Errorf("exec after Resume: exit code %d", code)
	}

	if err := task.Kill(ctx, 9); err != nil {
		t.Fatalf("kill: %v", err)
	}
	if code := exitCode(t, ctx, statusC); code != 137 {
		t.Errorf("exit status %d after SIGKILL, want 137", code)
	}
	if err := harness.DeleteContainer(ctx, ctr); err != nil {
		t.Fatalf("delete: %v", err)
	}
	expectNoLeftovers(t, d, ns, id)
	waitFor(t, 10*time.Second, "the scope "+unit+" to go", func() bool {
		_, err := os.Stat(cg.dir("memory"))
		return os.IsNotExist(err) && unitProperty(t, unit, "ActiveState") == "inactive"
	})

	// An OOM kill in a scope: /tasks/oom before the exit, and the shim's verdict.
	const hogID = "sd-oom"
	hog := newContainer(t, ctx, d, hogID, memoryHogArgs, oci.WithCgroup("system.slice:ex-sd:"+ns+"-"+hogID), oci.WithMemoryLimit(32<<20))
	evs := subscribeTaskEvents(t, ctx, d, ns)
	hogTask, hogExit := startTask(t, ctx, hog, cio.NullIO, systemdOpts)
	if code := exitCode(t, ctx, hogExit); code != 137 {
		t.Errorf("hog under 32 MiB: exit status %d, want 137", code)
	}
	expectOOMBeforeExit(t, evs, hogID)
	expectOOMScope(t, d, ns, hogID, "container")

	// The scope is gone with its last process, the task not deleted yet: its metrics are
	// what containerd 2.x's CRI reads at a 137 exit to tell an OOM kill, and they count it.
	hogScope := unitCgroup("system.slice", "ex-sd-"+ns+"-"+hogID+".scope")
	waitFor(t, 10*time.Second, "the hog's scope to go", func() bool {
		_, err := os.Stat(hogScope)
		return os.IsNotExist(err)
	})
	if m, err := hogTask.Metrics(ctx); err != nil {
		t.Errorf("metrics of the OOM-killed task, its scope gone: %v", err)
	} else if kills, _ := metricsOOMKills(t, m); kills == 0 {
		t.Errorf("metrics of the OOM-killed task, its scope gone: no oom_kill (%s)", m.GetData().GetTypeUrl())
	}
}

func containsPid(pids []containerd.ProcessInfo, pid uint32) bool {
	for _, p := range pids {
		if p.Pid == pid {
			return true
		}
	}
	return false
}

// A CRI pod in a kubelet-style pod slice, with a systemd-driver runtime handler: the pod's
// slice exists before RunPodSandbox with a memory limit (kubelet makes it, as a transient
// unit, before it asks for the pod), its containers' scopes go under it, and after the pod
// is removed the slice stops cleanly and its cgroup is gone.
func testSystemdPod(t *testing.T, d *harness.Daemon, cri *harness.CRI, handler string) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	slice := "kubepods-burstable-pod" + harness.RandID(12) + ".slice"
	sliceDir := unitCgroup("kubepods.slice", "kubepods-burstable.slice", slice)
	startPodSlice(t, slice, 256<<20)

	pod, err := runCRIPodIn(ctx, d, cri, "sd-"+harness.RandID(6), handler, slice)
	if err != nil {
		t.Fatal(err)
	}
	id := createCRIContainer(t, ctx, cri, pod, "app", []string{"sleep", "1000"}, func(c *runtimeapi.ContainerConfig) {
		c.Linux.Resources.MemoryLimitInBytes = 64 << 20
	})
	startCRIContainer(t, ctx, cri, id, "app")
	pid := initPid(t, id, []string{"sleep", "1000"}, "app")
	cg := cgroupOf(t, uint32(pid))
	if want := filepath.Join(sliceDir, "cri-containerd-"+id+".scope"); cg.dir("memory") != want {
		t.Errorf("the container's cgroup is %s, want %s", cg.dir("memory"), want)
	}
	if got := cg.memoryLimit(t); got != 64<<20 {
		t.Errorf("memory limit %d, want %d", got, 64<<20)
	}
	st, err := cri.Runtime.ContainerStats(ctx, &runtimeapi.ContainerStatsRequest{ContainerId: id})
	if err != nil {
		t.Fatalf("ContainerStats: %v", err)
	}
	if ws := st.GetStats().GetMemory().GetWorkingSetBytes().GetValue(); ws == 0 {
		t.Errorf("ContainerStats: memory working set 0 (%v)", st.GetStats().GetMemory())
	}
	if _, err := cri.Runtime.UpdateContainerResources(ctx, &runtimeapi.UpdateContainerResourcesRequest{
		ContainerId: id, Linux: &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: 96 << 20},
	}); err != nil {
		t.Fatalf("UpdateContainerResources: %v", err)
	}
	if got := cg.memoryLimit(t); got != 96<<20 {
		t.Errorf("memory limit %d after UpdateContainerResources, want %d", got, 96<<20)
	}
	if out := execOut(t, ctx, cri, id, "echo", "exec-ok"); out != "exec-ok\n" {
		t.Errorf("ExecSync: %q, want \"exec-ok\\n\"", out)
	}

	// OOMKilled needs the shim to learn of the kill although systemd removes the scope
	// at once, before the shim's read of its count if the kernel's notice came late: the
	// kernel's log names the victim (oomremoved.go). The stock shim reports none here.
	for i := 0; i < systemdOOMHogs; i++ {
		name := fmt.Sprintf("hog%d", i)
		hog := createCRIContainer(t, ctx, cri, pod, name, memoryHogArgs, func(c *runtimeapi.ContainerConfig) {
			c.Linux.Resources.MemoryLimitInBytes = 32 << 20
			c.Linux.Resources.MemorySwapLimitInBytes = 32 << 20
		})
		logStart := d.LogSize()
		startCRIContainer(t, ctx, cri, hog, name)
		st := waitCRIState(t, ctx, cri, hog, name, runtimeapi.ContainerState_CONTAINER_EXITED, 30*time.Second)
		if st.ExitCode != 137 || st.Reason != "OOMKilled" {
			t.Errorf("%s, killed by the OOM killer in a systemd scope: exit code %d reason %q, want 137 OOMKilled; what containerd logged of it:",
				name, st.ExitCode, st.Reason)
			for _, l := range strings.Split(d.LogSince(logStart, 1<<20), "\n") {
				if strings.Contains(l, hog) && (strings.Contains(l, "oom") || strings.Contains(l, "OOM") || strings.Contains(l, "exit")) {
					t.Log(l)
				}
			}
		}
	}

	if _, err := cri.Runtime.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: pod.id}); err != nil {
		t.Fatalf("StopPodSandbox: %v", err)
	}
	if _, err := cri.Runtime.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: pod.id}); err != nil {
		t.Fatalf("RemovePodSandbox: %v", err)
	}
	// kubelet stops a removed pod's slice; systemd removes its cgroup only when nothing is
	// left in it.
	if out, err := harness.Systemctl("stop", slice); err != nil {
		t.Errorf("systemctl stop %s: %v (%s)", slice, err, out)
	}
	if left := cgroupTree(sliceDir); len(left) > 0 {
		t.Errorf("the pod's slice %s was stopped, but its cgroup is still there: %v", slice, left)
	}
}

// startPodSlice makes and starts a slice unit limited to limit bytes, as kubelet's
// systemd driver makes a pod's (a transient unit there; a runtime unit file here), and
// removes it when the test ends.
func startPodSlice(t *testing.T, slice string, limit int64) {
	t.Helper()
	file := filepath.Join("/run/systemd/system", slice)
	if err := os.WriteFile(file, []byte(fmt.Sprintf("[Slice]\nMemoryMax=%d\n", limit)), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_, _ = harness.Systemctl("stop", slice)
		_ = os.Remove(file)
		_, _ = harness.Systemctl("daemon-reload")
	})
	for _, args := range [][]string{{"daemon-reload"}, {"start", slice}} {
		if out, err := harness.Systemctl(args...); err != nil {
			t.Fatalf("systemctl %s: %v (%s)", strings.Join(args, " "), err, out)
		}
	}
}

// cgroupTree lists the cgroup directories at and below dir that exist.
func cgroupTree(dir string) []string {
	var out []string
	_ = filepath.WalkDir(dir, func(path string, e os.DirEntry, err error) error {
		if err == nil && e.IsDir() {
			out = append(out, path)
		}
		return nil
	})
	return out
}
