package integration

import (
	"context"
	"fmt"
	"net"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	sandboxapi "github.com/containerd/containerd/api/runtime/sandbox/v1"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/example/containerd-shim-example-v2/integration/harness"
)

// TestSandboxPod: pods without pause containers. A CRI runtime handler with runtime_type =
// the shim under test and sandboxer = "shim" makes containerd 2.x's CRI plugin call the
// shim's Sandbox API; the shim answers StartSandbox with its namespace holder's pid. One pod
// with a network of its own (CNI bridge, TEST-NET-1 addresses), a shared PID namespace, a
// hostname, a DNS config, sysctls and a cgroup parent, checked through CRI and /proc:
//
//   - RunPodSandbox gives SANDBOX_READY with the pod's IP; one holder, one shim process
//   - containers share the holder's net, ipc, uts and pid namespaces
//   - the hostname, /etc/hostname, resolv.conf (the DNSConfig), /etc/hosts (the node's),
//     a 64 MiB tmpfs /dev/shm, and both sysctls inside the pod's namespaces (and not the
//     node's)
//   - shareProcessNamespace: containers see each other's processes, PID 1 is the holder,
//     and an orphan re-parented to it is reaped (no zombie left)
//   - stats: ListPodSandboxStats and PodSandboxStats (the pod cgroup's CPU and memory)
//   - the holder and the containers live under the pod's cgroup parent
//   - no runtime call for the pod (a logging runc wrapper first on containerd's PATH sees
//     only the app containers) and no process of the pause image in the pod
//   - the holder's and the shim's RSS and anonymous memory, in the log
//   - UpdatePodSandboxResources (kubelet's pod resize) succeeds and, under 2.4, reaches the
//     shim, which answers UpdateSandbox (nothing to apply) and keeps the pod as it was
//   - 10 more containers in the pod, all in the one shim process
//   - StopPodSandbox (NOTREADY, holder gone) and RemovePodSandbox: no holder, shim, bundle,
//     pod files, mounts or holder cgroup left
func TestSandboxPod(t *testing.T) {
	for _, flavor := range sandboxFlavors {
		t.Run("containerd-"+flavor, func(t *testing.T) {
			wrapper, callLog := runcWrapper(t)
			d, cri := harness.StartCRIDaemon(t, flavor, harness.WithPodNetwork(), harness.WithShimSandboxer(), harness.WithRunc(wrapper))
			ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
			defer cancel()

			hostname := "sbpod-" + harness.RandID(6)
			dns := &runtimeapi.DNSConfig{Servers: []string{"192.0.2.53"}, Searches: []string{"example.test"}, Options: []string{"ndots:2"}}
			sysctls := map[string]string{"kernel.shm_rmid_forced": "1", "net.ipv4.ip_unprivileged_port_start": "2000"}
			spec := &shimPodSpec{name: "pod-" + harness.RandID(6), sharePID: true, edit: func(c *runtimeapi.PodSandboxConfig) {
				c.Hostname = hostname
				c.DnsConfig = dns
				c.Linux.Sysctls = sysctls
			}}
			pod, took := runShimPod(t, ctx, d, cri, spec)
			t.Logf("RunPodSandbox (shim sandboxer, pod network): %v", took)

			st := podStatus(t, ctx, cri, pod.id)
			if st.State != runtimeapi.PodSandboxState_SANDBOX_READY {
				t.Fatalf("PodSandboxStatus: %v, want SANDBOX_READY", st.State)
			}
			_, subnet, _ := net.ParseCIDR(harness.PodSubnet)
			podIP := st.GetNetwork().GetIp()
			if ip := net.ParseIP(podIP); ip == nil || !subnet.Contains(ip) {
				t.Errorf("PodSandboxStatus: pod IP %q, want one of %s", podIP, harness.PodSubnet)
			}
			holder := holderOf(t, pod.id)
			shims := d.ShimProcesses(harness.CRINamespace, "")
			if len(shims) != 1 {
				t.Fatalf("shim processes after RunPodSandbox: %v, want one", shims)
			}
			shim := shims[0].Pid
			if st, err := harness.ReadProcStat(holder); err != nil || st.PPid != shim {
				t.Errorf("holder %d: %v (err %v), want a child of the shim %d", holder, st, err, shim)
			}

			c1, pid1 := startCRISleeper(t, ctx, cri, pod, "one", 3601)
			c2, pid2 := startCRISleeper(t, ctx, cri, pod, "two", 3602)

			t.Run("shared-namespaces", func(t *testing.T) {
				for _, ns := range []string{"net", "ipc", "uts", "pid"} {
					want := nsOf(t, holder, ns)
					if want == nsOf(t, os.Getpid(), ns) {
						t.Errorf("the holder's %s namespace is the node's", ns)
					}
					for name, pid := range map[string]int{"one": pid1, "two": pid2} {
						if got := nsOf(t, pid, ns); got != want {
							t.Errorf("container %s: %s namespace %s, the holder's is %s", name, ns, got, want)
						}
					}
				}
			})

			t.Run("pod-files", func(t *testing.T) {
				if got := strings.TrimSpace(execOut(t, ctx, cri, c1, "hostname")); got != hostname {
					t.Errorf("hostname in the pod: %q, want %q", got, hostname)
				}
				if got := execOut(t, ctx, cri, c1, "cat", "/etc/hostname"); got != hostname+"\n" {
					t.Errorf("/etc/hostname: %q, want %q", got, hostname+"\n")
				}
				want := "search example.test\nnameserver 192.0.2.53\noptions ndots:2\n"
				if got := execOut(t, ctx, cri, c2, "cat", "/etc/resolv.conf"); got != want {
					t.Errorf("/etc/resolv.conf: %q, want %q", got, want)
				}
				nodeHosts, err := os.ReadFile("/etc/hosts")
				if err != nil {
					t.Fatal(err)
				}
				if got := execOut(t, ctx, cri, c1, "cat", "/etc/hosts"); got != string(nodeHosts) {
					t.Errorf("/etc/hosts: %q, want the node's %q", got, nodeHosts)
				}
				// /dev/shm: a tmpfs of 64 MiB, the same one in both containers.
				df := strings.Fields(lastLine(execOut(t, ctx, cri, c1, "df", "-k", "/dev/shm")))
				if len(df) < 2 || df[1] != "65536" {
					t.Errorf("df -k /dev/shm: %q, want 65536 1K-blocks", df)
				}
				execOut(t, ctx, cri, c1, "sh", "-c", "echo shared > /dev/shm/probe")
				if got := execOut(t, ctx, cri, c2, "cat", "/dev/shm/probe"); got != "shared\n" {
					t.Errorf("/dev/shm/probe written in one container reads %q in the other", got)
				}
			})

			t.Run("sysctls", func(t *testing.T) {
				for k, v := range sysctls {
					p := "/proc/sys/" + strings.ReplaceAll(k, ".", "/")
					if got := strings.TrimSpace(execOut(t, ctx, cri, c1, "cat", p)); got != v {
						t.Errorf("sysctl %s in the pod: %q, want %q", k, got, v)
					}
					if node, err := os.ReadFile(p); err == nil && strings.TrimSpace(string(node)) == v {
						t.Errorf("sysctl %s is %s on the node too: the pod's setting leaked, or the check proves nothing", k, v)
					}
				}
			})

			t.Run("share-process-namespace", func(t *testing.T) {
				ps := execOut(t, ctx, cri, c1, "ps")
				if !strings.Contains(ps, "sleep 3602") {
					t.Errorf("ps in container one does not show container two's sleep 3602:\n%s", ps)
				}
				if got := execOut(t, ctx, cri, c1, "cat", "/proc/1/cmdline"); !strings.Contains(got, "pod-holder") {
					t.Errorf("PID 1 of the pod is %q, want the holder", strings.ReplaceAll(got, "\x00", " "))
				}
				// An orphan: the subshell exits at once, its sleep (detached from the
				// exec's output, which ExecSync would wait for) is re-parented to PID 1.
				execOut(t, ctx, cri, c1, "sh", "-c", "(sleep 1.7 </dev/null >/dev/null 2>&1 &) ; true")
				var orphan harness.Proc
				waitFor(t, 1500*time.Millisecond, "the orphaned sleep 1.7", func() bool {
					ps := processesIn(c1, "sleep", "1.7")
					if len(ps) == 1 {
						orphan = ps[0]
					}
					return orphan.Pid > 0
				})
				if st, err := harness.ReadProcStat(orphan.Pid); err == nil && st.PPid != holder {
					t.Errorf("orphan %v: parent %d, want the holder %d", orphan, st.PPid, holder)
				}
				waitFor(t, 5*time.Second, "the orphan exits and is reaped", func() bool { return !harness.PidExists(orphan.Pid) })
				if z := harness.ZombiesOf(map[int]bool{holder: true}); len(z) > 0 {
					t.Errorf("zombies left under the holder: %v", z)
				}
				if _, err := os.Stat(fmt.Sprintf("/proc/%d", orphan.Pid)); err == nil {
					t.Errorf("orphan %d is still in /proc (an unreaped zombie)", orphan.Pid)
				}
			})

			t.Run("pod-ip-inside", func(t *testing.T) {
				if out := execOut(t, ctx, cri, c1, "ip", "-4", "addr", "show", "eth0"); !strings.Contains(out, podIP+"/") {
					t.Errorf("eth0 in the pod does not carry %s:\n%s", podIP, out)
				}
			})

			t.Run("stats", func(t *testing.T) {
				r, err := cri.Runtime.ListPodSandboxStats(ctx, &runtimeapi.ListPodSandboxStatsRequest{Filter: &runtimeapi.PodSandboxStatsFilter{Id: pod.id}})
				if err != nil {
					t.Fatalf("ListPodSandboxStats: %v", err)
				}
				if len(r.Stats) != 1 {
					t.Fatalf("ListPodSandboxStats: %d entries, want 1", len(r.Stats))
				}
				s := r.Stats[0].GetLinux()
				if s.GetMemory().GetWorkingSetBytes().GetValue() == 0 && s.GetMemory().GetUsageBytes().GetValue() == 0 {
					t.Errorf("pod memory stats: %v, want non-zero usage", s.GetMemory())
				}
				if s.GetCpu() == nil {
					t.Errorf("pod stats without CPU")
				}
				if len(s.GetContainers()) < 2 {
					t.Errorf("pod stats list %d containers, want at least 2", len(s.GetContainers()))
				}
				one, err := cri.Runtime.PodSandboxStats(ctx, &runtimeapi.PodSandboxStatsRequest{PodSandboxId: pod.id})
				if err != nil || one.GetStats().GetLinux().GetMemory() == nil {
					t.Errorf("PodSandboxStats: %v %v", one, err)
				}
			})

			t.Run("cgroup-parent", func(t *testing.T) {
				if got, want := memCgroupPath(t, holder), spec.cgroupPath+"/"+pod.id; got != want {
					t.Errorf("holder's cgroup %s, want %s", got, want)
				}
				for name, pid := range map[string]int{"one": pid1, "two": pid2} {
					if got := memCgroupPath(t, pid); !strings.HasPrefix(got, spec.cgroupPath+"/") {
						t.Errorf("container %s's cgroup %s is not under the pod's %s", name, got, spec.cgroupPath)
					}
				}
			})

			t.Run("no-pause", func(t *testing.T) {
				data, err := os.ReadFile(callLog)
				if err != nil {
					t.Fatalf("runtime call log: %v", err)
				}
				calls := strings.Split(strings.TrimSpace(string(data)), "\n")
				for _, c := range calls {
					if strings.Contains(c, pod.id) {
						t.Errorf("a runtime call for the pod itself: %q", c)
					}
				}
				for _, id := range []string{c1, c2} {
					if !slices.ContainsFunc(calls, func(c string) bool { return strings.Contains(c, "create") && strings.Contains(c, id) }) {
						t.Errorf("no runtime create for app container %s in the call log (the wrapper is not in use?):\n%s", id, data)
					}
				}
				pause := harness.Processes(func(a []string) bool { return slices.Equal(a, harness.PauseCommand) })
				for _, p := range pause {
					if strings.HasPrefix(memCgroupPath(t, p.Pid), spec.cgroupPath) {
						t.Errorf("a pause-image process runs in the pod: %v", p)
					}
				}
			})

			t.Run("memory", func(t *testing.T) {
				time.Sleep(3 * time.Second) // the shim trims itself 2 s after its last request
				h := logMemory(t, "holder", holder)
				logMemory(t, "shim", shim)
				if h.RSS > 4096 {
					t.Errorf("holder RSS %d KiB, want at most 4 MiB", h.RSS)
				}
			})

			// kubelet's pod-level resize. containerd 2.4 passes the new record on to the
			// shim (2.2's CRI answers Unimplemented itself); the shim has nothing to apply
			// (the pod's cgroup is kubelet's) and answers, where it used to leave the
			// method out.
			t.Run("resize", func(t *testing.T) {
				if flavor != "2.2" {
					logStart := d.LogSize()
					res := &runtimeapi.LinuxContainerResources{CpuShares: 512, MemoryLimitInBytes: 256 << 20}
					if _, err := cri.Runtime.UpdatePodSandboxResources(ctx, &runtimeapi.UpdatePodSandboxResourcesRequest{
						PodSandboxId: pod.id, Resources: res, Overhead: &runtimeapi.LinuxContainerResources{CpuShares: 2}}); err != nil {
						t.Fatalf("UpdatePodSandboxResources: %v", err)
					}
					if !eventually(5*time.Second, func() bool { return strings.Contains(d.LogSince(logStart, 1<<20), updateSandboxLogLine) }) {
						t.Errorf("the shim did not log %q after UpdatePodSandboxResources (containerd did not pass it on?)", updateSandboxLogLine)
					}
				}
				if _, err := sandboxClient(t, d, pod.id).UpdateSandbox(ctx, &sandboxapi.UpdateSandboxRequest{SandboxID: pod.id}); err != nil {
					t.Errorf("UpdateSandbox of the running pod: %v", err)
				}
				if st := podStatus(t, ctx, cri, pod.id); st.State != runtimeapi.PodSandboxState_SANDBOX_READY || holderOf(t, pod.id) != holder {
					t.Errorf("after the resize: %v, holder %d, want SANDBOX_READY with holder %d", st.State, holderOf(t, pod.id), holder)
				}
			})

			t.Run("ten-containers", func(t *testing.T) {
				for i := 0; i < 10; i++ {
					_, pid := startCRISleeper(t, ctx, cri, pod, fmt.Sprintf("more%d", i), 3700+i)
					if got := nsOf(t, pid, "net"); got != nsOf(t, holder, "net") {
						t.Errorf("container more%d: netns %s, the pod's is %s", i, got, nsOf(t, holder, "net"))
					}
				}
				if p := d.ShimProcesses(harness.CRINamespace, ""); len(p) != 1 || p[0].Pid != shim {
					t.Errorf("shim processes with 12 containers in the pod: %v, want only %d", p, shim)
				}
			})

			// Teardown as kubelet does it.
			if _, err := cri.Runtime.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: pod.id}); err != nil {
				t.Fatalf("StopPodSandbox: %v", err)
			}
			if st := podStatus(t, ctx, cri, pod.id); st.State != runtimeapi.PodSandboxState_SANDBOX_NOTREADY {
				t.Errorf("PodSandboxStatus after StopPodSandbox: %v, want SANDBOX_NOTREADY", st.State)
			}
			waitFor(t, 5*time.Second, "the holder exits with StopPodSandbox", func() bool { return !harness.PidExists(holder) })
			if _, err := cri.Runtime.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: pod.id}); err != nil {
				t.Fatalf("RemovePodSandbox: %v", err)
			}
			waitFor(t, 10*time.Second, "the pod's shim exits after RemovePodSandbox", func() bool { return !harness.PidExists(shim) })
			if left := pollLeftovers(10*time.Second, func() []string { return d.SandboxLeftovers(pod.id, spec.cgroupPath) }); len(left) > 0 {
				t.Errorf("left after RemovePodSandbox: %s", strings.Join(left, "; "))
			}
		})
	}
}

// pollLeftovers polls list until it is empty or timeout passes.
func pollLeftovers(timeout time.Duration, list func() []string) []string {
	var l []string
	eventually(timeout, func() bool { l = list(); return len(l) == 0 })
	return l
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}
