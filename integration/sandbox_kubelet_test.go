package integration

import (
	"context"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/example/containerd-shim-example-v2/integration/harness"
)

// TestSandboxKubeletPaths: shim-sandboxer pods driven as kubelet drives them, under the newest
// containerd 2.x (2.2 panics on host-network pods of a shim sandboxer).
//
//   - host-namespaces: hostNetwork, hostIPC and hostPID; its container runs in the node's
//     net, ipc, uts and pid namespaces with the node's /dev/shm; removal leaves nothing
//   - sysctl-slashes: a sysctl named with slashes (sysctl.d(5)) is set in the pod
//   - stop-running: StopPodSandbox while two containers (no namespace options) still run:
//     both are reported exited, the holder goes, RemovePodSandbox leaves nothing
//   - restart: a container that exited is followed by a new one (attempt 1) in the same
//     pod, in the pod's namespaces
func TestSandboxKubeletPaths(t *testing.T) {
	d, cri := harness.StartCRIDaemon(t, harness.Flavor2x, harness.WithPodNetwork(), harness.WithShimSandboxer())
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()

	t.Run("host-namespaces", func(t *testing.T) {
		spec := &shimPodSpec{name: "hostns-" + harness.RandID(6), hostNet: true, edit: func(c *runtimeapi.PodSandboxConfig) {
			ns := c.Linux.SecurityContext.NamespaceOptions
			ns.Pid, ns.Ipc = runtimeapi.NamespaceMode_NODE, runtimeapi.NamespaceMode_NODE
		}}
		pod, _ := runShimPod(t, ctx, d, cri, spec)
		if st := podStatus(t, ctx, cri, pod.id); st.State != runtimeapi.PodSandboxState_SANDBOX_READY {
			t.Fatalf("PodSandboxStatus: %v, want SANDBOX_READY", st.State)
		}
		args := []string{"sleep", "3631"}
		id := createCRIContainer(t, ctx, cri, pod, "host", args, func(c *runtimeapi.ContainerConfig) {
			c.Linux.SecurityContext = &runtimeapi.LinuxContainerSecurityContext{NamespaceOptions: &runtimeapi.NamespaceOption{
				Network: runtimeapi.NamespaceMode_NODE, Pid: runtimeapi.NamespaceMode_NODE, Ipc: runtimeapi.NamespaceMode_NODE}}
		})
		startCRIContainer(t, ctx, cri, id, "host")
		pid := initPid(t, id, args, "the init of the host container")
		for _, ns := range []string{"net", "ipc", "uts", "pid"} {
			if got, want := nsOf(t, pid, ns), nsOf(t, os.Getpid(), ns); got != want {
				t.Errorf("host container: %s namespace %s, want the node's %s", ns, got, want)
			}
		}
		probe := "/dev/shm/sbx-" + harness.RandID(6)
		if err := os.WriteFile(probe, []byte("node\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		defer os.Remove(probe)
		if got := execOut(t, ctx, cri, id, "cat", probe); got != "node\n" {
			t.Errorf("the node's %s reads %q in a hostIPC container", probe, got)
		}
		stopAndRemove(t, ctx, d, cri, pod, spec)
	})

	t.Run("sysctl-slashes", func(t *testing.T) {
		// sysctl.d(5)'s slash form, which kubelet passes on and runc takes.
		spec := &shimPodSpec{name: "slash-" + harness.RandID(6), edit: func(c *runtimeapi.PodSandboxConfig) {
			c.Linux.Sysctls = map[string]string{"net/ipv4/ip_unprivileged_port_start": "2001"}
		}}
		pod, _ := runShimPod(t, ctx, d, cri, spec)
		c1, _ := startCRISleeper(t, ctx, cri, pod, "one", 3681)
		if got := strings.TrimSpace(execOut(t, ctx, cri, c1, "cat", "/proc/sys/net/ipv4/ip_unprivileged_port_start")); got != "2001" {
			t.Errorf("net/ipv4/ip_unprivileged_port_start in the pod: %q, want 2001", got)
		}
		stopAndRemove(t, ctx, d, cri, pod, spec)
	})

	t.Run("stop-running", func(t *testing.T) {
		spec := &shimPodSpec{name: "stoprun-" + harness.RandID(6)}
		pod, _ := runShimPod(t, ctx, d, cri, spec)
		holder := holderOf(t, pod.id)
		c1, pid1 := startCRISleeper(t, ctx, cri, pod, "one", 3641)
		c2, pid2 := startCRISleeper(t, ctx, cri, pod, "two", 3642)
		if _, err := cri.Runtime.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: pod.id}); err != nil {
			t.Fatalf("StopPodSandbox: %v", err)
		}
		for name, id := range map[string]string{"one": c1, "two": c2} {
			waitCRIState(t, ctx, cri, id, name, runtimeapi.ContainerState_CONTAINER_EXITED, 10*time.Second)
		}
		for _, pid := range []int{pid1, pid2, holder} {
			waitFor(t, 5*time.Second, "the pod's processes end", func() bool { return !harness.PidExists(pid) })
		}
		if st := podStatus(t, ctx, cri, pod.id); st.State != runtimeapi.PodSandboxState_SANDBOX_NOTREADY {
			t.Errorf("PodSandboxStatus after StopPodSandbox: %v", st.State)
		}
		stopAndRemove(t, ctx, d, cri, pod, spec)
	})

	t.Run("restart", func(t *testing.T) {
		spec := &shimPodSpec{name: "restart-" + harness.RandID(6)}
		pod, _ := runShimPod(t, ctx, d, cri, spec)
		holder := holderOf(t, pod.id)
		first := createCRIContainer(t, ctx, cri, pod, "app", []string{"sh", "-c", "exit 3"}, nil)
		startCRIContainer(t, ctx, cri, first, "app")
		st := waitCRIState(t, ctx, cri, first, "app", runtimeapi.ContainerState_CONTAINER_EXITED, 10*time.Second)
		if st.ExitCode != 3 {
			t.Errorf("first attempt: exit %d, want 3", st.ExitCode)
		}
		args := []string{"sleep", "3651"}
		second := createCRIContainer(t, ctx, cri, pod, "app", args, func(c *runtimeapi.ContainerConfig) {
			c.Metadata.Attempt = 1
			c.LogPath = "app_1.log"
		})
		startCRIContainer(t, ctx, cri, second, "app")
		waitCRIState(t, ctx, cri, second, "app", runtimeapi.ContainerState_CONTAINER_RUNNING, 10*time.Second)
		pid := initPid(t, second, args, "the second attempt's init")
		for _, ns := range []string{"net", "ipc", "uts"} {
			if got, want := nsOf(t, pid, ns), nsOf(t, holder, ns); got != want {
				t.Errorf("second attempt: %s namespace %s, the pod's is %s", ns, got, want)
			}
		}
		if _, err := cri.Runtime.RemoveContainer(ctx, &runtimeapi.RemoveContainerRequest{ContainerId: first}); err != nil {
			t.Errorf("RemoveContainer of the first attempt: %v", err)
		}
		if got := strings.TrimSpace(execOut(t, ctx, cri, second, "echo", "ok")); got != "ok" {
			t.Errorf("exec after the first attempt was removed: %q", got)
		}
		stopAndRemove(t, ctx, d, cri, pod, spec)
	})
}

// TestSandboxStartFails: a pod whose StartSandbox fails half-way (a sysctl the kernel refuses
// to set, or one that does not exist) fails RunPodSandbox and leaves no pod, holder, shim,
// /dev/shm mount or cgroup; a good pod runs afterwards.
func TestSandboxStartFails(t *testing.T) {
	d, cri := harness.StartCRIDaemon(t, harness.Flavor2x, harness.WithPodNetwork(), harness.WithShimSandboxer())
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for _, bad := range []map[string]string{
		{"net.ipv4.ip_unprivileged_port_start": "not-a-number"},
		{"net.ipv4.no_such_sysctl": "1"},
	} {
		spec := &shimPodSpec{name: "startfail-" + harness.RandID(6), edit: func(c *runtimeapi.PodSandboxConfig) { c.Linux.Sysctls = bad }}
		_, _, err := runShimPodErr(ctx, d, cri, spec)
		if err == nil {
			t.Fatalf("RunPodSandbox with sysctls %v succeeded", bad)
		}
		t.Logf("RunPodSandbox with sysctls %v: %v", bad, err)
		ls, lerr := cri.Runtime.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{})
		if lerr != nil {
			t.Fatal(lerr)
		}
		for _, p := range ls.Items {
			t.Errorf("pod listed after the failed RunPodSandbox: %v %v", p.Id, p.State)
		}
		waitFor(t, 10*time.Second, "no shim left", func() bool { return len(d.ShimProcesses(harness.CRINamespace, "")) == 0 })
		if hs := harness.HolderProcesses(""); len(hs) > 0 {
			t.Errorf("holders left: %v", hs)
		}
		if left := harness.MountsUnder(d.Base); len(left) > 0 {
			for _, m := range left {
				if strings.Contains(m.Point, "sandboxes") {
					t.Errorf("mount left: %s", m.Point)
				}
			}
		}
		for _, h := range harness.CgroupHierarchies() {
			if ents, err := os.ReadDir(h + spec.cgroupPath); err == nil && len(ents) > 0 {
				for _, e := range ents {
					if e.IsDir() {
						t.Errorf("cgroup left under the pod's parent: %s/%s", h+spec.cgroupPath, e.Name())
					}
				}
			}
		}
	}
	pod, _ := runShimPod(t, ctx, d, cri, &shimPodSpec{name: "startok-" + harness.RandID(6)})
	if st := podStatus(t, ctx, cri, pod.id); st.State != runtimeapi.PodSandboxState_SANDBOX_READY {
		t.Errorf("pod after the failed ones: %v", st.State)
	}
}

// TestSandboxHolderDies: the holder of a running pod is killed (the OOM killer, an
// operator): CRI reports the pod NOTREADY, kubelet stops and removes it, nothing is left.
// Once while containerd runs, once while it is down.
func TestSandboxHolderDies(t *testing.T) {
	d, cri := harness.StartCRIDaemon(t, harness.Flavor2x, harness.WithPodNetwork(), harness.WithShimSandboxer())
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	for _, down := range []bool{false, true} {
		spec := &shimPodSpec{name: "hdies-" + harness.RandID(6)}
		pod, _ := runShimPod(t, ctx, d, cri, spec)
		holder := holderOf(t, pod.id)
		// Pid CONTAINER, as kubelet sends it for a pod without shareProcessNamespace.
		args := []string{"sleep", "3661"}
		c1 := createCRIContainer(t, ctx, cri, pod, "one", args, func(c *runtimeapi.ContainerConfig) {
			c.Linux.SecurityContext = &runtimeapi.LinuxContainerSecurityContext{NamespaceOptions: &runtimeapi.NamespaceOption{
				Network: runtimeapi.NamespaceMode_POD, Pid: runtimeapi.NamespaceMode_CONTAINER, Ipc: runtimeapi.NamespaceMode_POD}}
		})
		startCRIContainer(t, ctx, cri, c1, "one")
		waitCRIState(t, ctx, cri, c1, "one", runtimeapi.ContainerState_CONTAINER_RUNNING, 10*time.Second)
		if down {
			if err := d.StopProcess(); err != nil {
				t.Fatal(err)
			}
		}
		if err := syscall.Kill(holder, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		if down {
			time.Sleep(200 * time.Millisecond)
			if err := d.StartProcess(); err != nil {
				t.Fatal(err)
			}
			if err := cri.WaitReady(ctx, harness.ImageName); err != nil {
				t.Fatal(err)
			}
		}
		waitPodNotReady(t, ctx, cri, pod.id, "after its holder was killed")
		waitPodListedNotReady(t, ctx, cri, pod.id)
		waitCRIState(t, ctx, cri, c1, "one", runtimeapi.ContainerState_CONTAINER_RUNNING, time.Second)
		stopAndRemove(t, ctx, d, cri, pod, spec)
	}
}

// TestSandboxShimDiesWhileDown: a pod's shim is killed while containerd is down. After the
// restart CRI reports the pod NOTREADY, its container exited, and kubelet's stop and removal
// succeed and leave nothing.
func TestSandboxShimDiesWhileDown(t *testing.T) {
	d, cri := harness.StartCRIDaemon(t, harness.Flavor2x, harness.WithPodNetwork(), harness.WithShimSandboxer())
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	spec := &shimPodSpec{name: "sdies-" + harness.RandID(6), sharePID: true}
	pod, _ := runShimPod(t, ctx, d, cri, spec)
	holder := holderOf(t, pod.id)
	c1, _ := startCRISleeper(t, ctx, cri, pod, "one", 3671)
	shims := d.ShimProcesses(harness.CRINamespace, pod.id)
	if len(shims) != 1 {
		t.Fatalf("shims: %v", shims)
	}
	if err := d.StopProcess(); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(shims[0].Pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "the holder goes with its shim", func() bool { return !harness.PidExists(holder) })
	if err := d.StartProcess(); err != nil {
		t.Fatal(err)
	}
	if err := cri.WaitReady(ctx, harness.ImageName); err != nil {
		t.Fatal(err)
	}
	waitPodNotReady(t, ctx, cri, pod.id, "after the restart")
	waitCRIState(t, ctx, cri, c1, "one", runtimeapi.ContainerState_CONTAINER_EXITED, 10*time.Second)
	if _, err := cri.Runtime.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: pod.id}); err != nil {
		t.Fatalf("StopPodSandbox: %v", err)
	}
	removeAllOf(t, ctx, cri, pod.id)
	if left := pollLeftovers(10*time.Second, func() []string { return d.SandboxLeftovers(pod.id, spec.cgroupPath) }); len(left) > 0 {
		t.Errorf("left: %s", strings.Join(left, "; "))
	}
}
