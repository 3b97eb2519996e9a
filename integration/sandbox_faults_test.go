package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	sandboxapi "github.com/containerd/containerd/api/runtime/sandbox/v1"
	"google.golang.org/protobuf/types/known/anypb"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/example/containerd-shim-example-v2/integration/direct"
	"github.com/example/containerd-shim-example-v2/integration/harness"
)

// TestSandboxFaults: a shim-sandboxer pod (pod network, shared PID namespace, one container)
// through two faults.
//
//   - shim-killed: SIGKILL to the pod's shim. WaitSandbox returns (CRI reports the pod
//     SANDBOX_NOTREADY), the holder goes with the shim, the container is reported exited;
//     StopPodSandbox and RemovePodSandbox succeed and nothing is left: `delete` of the
//     sandbox bundle removed the pod files, the /dev/shm mount and the holder cgroup.
//   - containerd-restart: containerd is stopped and started again under a running pod. The
//     pod is SANDBOX_READY with the same holder and shim, its container still runs and execs,
//     a new container joins the same namespaces (CRI asks SandboxStatus for the pid again),
//     and removal leaves nothing.
func TestSandboxFaults(t *testing.T) {
	for _, flavor := range sandboxFlavors {
		t.Run("containerd-"+flavor, func(t *testing.T) {
			d, cri := harness.StartCRIDaemon(t, flavor, harness.WithPodNetwork(), harness.WithShimSandboxer())
			ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
			defer cancel()

			t.Run("shim-killed", func(t *testing.T) {
				spec := &shimPodSpec{name: "killed-" + harness.RandID(6), sharePID: true}
				pod, _ := runShimPod(t, ctx, d, cri, spec)
				holder := holderOf(t, pod.id)
				c1, _ := startCRISleeper(t, ctx, cri, pod, "victim", 3611)
				shims := d.ShimProcesses(harness.CRINamespace, pod.id)
				if len(shims) != 1 {
					t.Fatalf("shim of pod %s: %v, want one", pod.id, shims)
				}
				if err := syscall.Kill(shims[0].Pid, syscall.SIGKILL); err != nil {
					t.Fatal(err)
				}
				waitPodNotReady(t, ctx, cri, pod.id, "after its shim was killed")
				waitFor(t, 5*time.Second, "the holder goes with its shim", func() bool { return !harness.PidExists(holder) })
				waitCRIState(t, ctx, cri, c1, "victim", runtimeapi.ContainerState_CONTAINER_EXITED, 10*time.Second)
				if _, err := cri.Runtime.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: pod.id}); err != nil {
					t.Fatalf("StopPodSandbox after the shim was killed: %v", err)
				}
				removeAllOf(t, ctx, cri, pod.id)
				if left := pollLeftovers(10*time.Second, func() []string { return d.SandboxLeftovers(pod.id, spec.cgroupPath) }); len(left) > 0 {
					t.Errorf("left after the killed shim's pod was removed: %s", strings.Join(left, "; "))
				}
				if left := d.WaitCRILeftovers(map[string]bool{pod.id: true, c1: true}, harness.LeakTimeout); len(left) > 0 {
					t.Errorf("CRI leftovers: %s", strings.Join(left, "; "))
				}
			})

			t.Run("containerd-restart", func(t *testing.T) {
				spec := &shimPodSpec{name: "restart-" + harness.RandID(6), sharePID: true}
				pod, _ := runShimPod(t, ctx, d, cri, spec)
				holder := holderOf(t, pod.id)
				c1, pid1 := startCRISleeper(t, ctx, cri, pod, "survivor", 3621)
				shim := d.ShimProcesses(harness.CRINamespace, pod.id)[0].Pid

				if err := d.StopProcess(); err != nil {
					t.Fatal(err)
				}
				if err := d.StartProcess(); err != nil {
					t.Fatal(err)
				}
				if err := cri.WaitReady(ctx, harness.ImageName); err != nil {
					t.Fatal(err)
				}
				if st := podStatus(t, ctx, cri, pod.id); st.State != runtimeapi.PodSandboxState_SANDBOX_READY {
					t.Fatalf("pod after the restart: %v, want SANDBOX_READY", st.State)
				}
				if hs := harness.HolderProcesses(pod.id); len(hs) != 1 || hs[0].Pid != holder {
					t.Errorf("holder after the restart: %v, want the same %d", hs, holder)
				}
				if p := d.ShimProcesses(harness.CRINamespace, ""); len(p) != 1 || p[0].Pid != shim {
					t.Errorf("shims after the restart: %v, want the same %d", p, shim)
				}
				waitCRIState(t, ctx, cri, c1, "survivor", runtimeapi.ContainerState_CONTAINER_RUNNING, 5*time.Second)
				if got := strings.TrimSpace(execOut(t, ctx, cri, c1, "echo", "alive")); got != "alive" {
					t.Errorf("exec in the recovered container: %q", got)
				}
				_, pid2 := startCRISleeper(t, ctx, cri, pod, "newcomer", 3622)
				for _, ns := range []string{"net", "ipc", "uts", "pid"} {
					if a, b := nsOf(t, pid1, ns), nsOf(t, pid2, ns); a != b || a != nsOf(t, holder, ns) {
						t.Errorf("%s namespace after the restart: old container %s, new %s, holder %s", ns, a, b, nsOf(t, holder, ns))
					}
				}
				if _, err := cri.Runtime.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: pod.id}); err != nil {
					t.Fatalf("StopPodSandbox: %v", err)
				}
				removeAllOf(t, ctx, cri, pod.id)
				waitFor(t, 10*time.Second, "the pod's shim exits", func() bool { return !harness.PidExists(shim) })
				if left := pollLeftovers(10*time.Second, func() []string { return d.SandboxLeftovers(pod.id, spec.cgroupPath) }); len(left) > 0 {
					t.Errorf("left after the recovered pod was removed: %s", strings.Join(left, "; "))
				}
			})
		})
	}
}

// removeAllOf removes a pod's containers and the pod through CRI.
func removeAllOf(t *testing.T, ctx context.Context, cri *harness.CRI, podID string) {
	t.Helper()
	ls, err := cri.Runtime.ListContainers(ctx, &runtimeapi.ListContainersRequest{Filter: &runtimeapi.ContainerFilter{PodSandboxId: podID}})
	if err != nil {
		t.Fatalf("ListContainers: %v", err)
	}
	for _, c := range ls.Containers {
		if _, err := cri.Runtime.RemoveContainer(ctx, &runtimeapi.RemoveContainerRequest{ContainerId: c.Id}); err != nil {
			t.Errorf("RemoveContainer %s: %v", c.Metadata.Name, err)
		}
	}
	if _, err := cri.Runtime.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: podID}); err != nil {
		t.Fatalf("RemovePodSandbox: %v", err)
	}
}

// podConfigAny is a PodSandboxConfig as CRI sends it in CreateSandboxRequest.options.
func podConfigAny(t *testing.T, hostNet bool, sysctls map[string]string) *anypb.Any {
	t.Helper()
	mode := runtimeapi.NamespaceMode_POD
	if hostNet {
		mode = runtimeapi.NamespaceMode_NODE
	}
	a, err := anypb.New(&runtimeapi.PodSandboxConfig{
		Metadata: &runtimeapi.PodSandboxMetadata{Name: "bad", Uid: harness.RandID(8), Namespace: "default"},
		Linux: &runtimeapi.LinuxPodSandboxConfig{
			Sysctls:         sysctls,
			SecurityContext: &runtimeapi.LinuxSandboxSecurityContext{NamespaceOptions: &runtimeapi.NamespaceOption{Network: mode}},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// TestSandboxBadInput: the Sandbox API refuses bad requests with typed errors (errdefs
// classes on the wire) and is left as it was.
//
//   - under CRI, on a running pod's shim: CreateSandbox with a network namespace path that
//     does not exist (NotFound), without one for a pod network (InvalidArgument), with a
//     sysctl that is not namespaced (InvalidArgument), with the running pod's id
//     (AlreadyExists); every call naming an unknown sandbox (NotFound). Afterwards the pod is
//     still SANDBOX_READY with its one holder, no holder was started for a refused pod, and
//     the refused pods' bundles hold nothing.
//   - a shim started directly (as containerd's shim sandbox controller starts it, no
//     containerd): a refused CreateSandbox, then ShutdownSandbox (NotFound) as containerd
//     sends after a failed create; the shim leaves once the client hangs up, its socket goes,
//     and no holder was ever started.
func TestSandboxBadInput(t *testing.T) {
	for _, flavor := range sandboxFlavors {
		t.Run("containerd-"+flavor, func(t *testing.T) {
			// A pod network: containerd 2.2 crashes on a host-network pod of a shim
			// sandboxer (a nil spec in NewBundle, fixed in 2.3).
			d, cri := harness.StartCRIDaemon(t, flavor, harness.WithPodNetwork(), harness.WithShimSandboxer())
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			pod, _ := runShimPod(t, ctx, d, cri, &shimPodSpec{name: "target-" + harness.RandID(6)})
			holder := holderOf(t, pod.id)
			sb := sandboxClient(t, d, pod.id)
			checkRefusals(t, ctx, sb, pod.id)
			if st := podStatus(t, ctx, cri, pod.id); st.State != runtimeapi.PodSandboxState_SANDBOX_READY {
				t.Errorf("the pod after the refused calls: %v, want SANDBOX_READY", st.State)
			}
			if hs := harness.HolderProcesses(""); len(hs) != 1 || hs[0].Pid != holder {
				t.Errorf("holders after the refused calls: %v, want only the pod's %d", hs, holder)
			}
			if _, err := sb.PingSandbox(ctx, &sandboxapi.PingRequest{SandboxID: pod.id}); err != nil {
				t.Errorf("PingSandbox of the running pod: %v", err)
			}
		})
	}

	t.Run("direct", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		id := "direct-" + harness.RandID(8)
		bundle := t.TempDir()
		socket, pid := startShimDirect(t, bundle, id)
		sb, client := dialSandbox(t, socket)
		_, err := sb.CreateSandbox(ctx, &sandboxapi.CreateSandboxRequest{SandboxID: id, BundlePath: bundle,
			NetnsPath: "/run/ex-test/no-such-netns-" + id, Options: podConfigAny(t, false, nil)})
		if c := direct.ErrClass(err); c != "NotFound" {
			t.Errorf("CreateSandbox with a missing netns: %v (%s), want NotFound", err, c)
		}
		_, err = sb.ShutdownSandbox(ctx, &sandboxapi.ShutdownSandboxRequest{SandboxID: id})
		if c := direct.ErrClass(err); c != "NotFound" {
			t.Errorf("ShutdownSandbox of the refused sandbox: %v (%s), want NotFound", err, c)
		}
		if hs := harness.HolderProcesses(id); len(hs) > 0 {
			t.Errorf("holder of a refused sandbox: %v", hs)
		}
		client.Close() // containerd hangs up after ShutdownSandbox
		waitFor(t, 10*time.Second, "the shim leaves after the refused pod's shutdown and hang-up", func() bool { return !harness.PidExists(pid) })
		if _, err := os.Lstat(socket); !os.IsNotExist(err) {
			t.Errorf("shim socket %s left (%v)", socket, err)
		}
		entries, _ := os.ReadDir(bundle)
		for _, e := range entries {
			if e.Name() != "address" { // written by `start`, as for any task
				t.Errorf("left in the bundle: %s", e.Name())
			}
		}
	})
}

// checkRefusals sends the bad requests to a shim serving pod podID.
func checkRefusals(t *testing.T, ctx context.Context, sb sandboxCaller, podID string) {
	t.Helper()
	unknown := "unknown-" + harness.RandID(8)
	bundle := func() string { return t.TempDir() }
	creates := []struct {
		what string
		req  *sandboxapi.CreateSandboxRequest
		want string
	}{
		{"a missing netns path", &sandboxapi.CreateSandboxRequest{SandboxID: "bad1-" + harness.RandID(6), BundlePath: bundle(),
			NetnsPath: "/run/ex-test/no-such-netns", Options: podConfigAny(t, false, nil)}, "NotFound"},
		{"no netns path for a pod network", &sandboxapi.CreateSandboxRequest{SandboxID: "bad2-" + harness.RandID(6), BundlePath: bundle(),
			Options: podConfigAny(t, false, nil)}, "InvalidArgument"},
		{"a sysctl that is not namespaced", &sandboxapi.CreateSandboxRequest{SandboxID: "bad3-" + harness.RandID(6), BundlePath: bundle(),
			Options: podConfigAny(t, true, map[string]string{"kernel.pid_max": "4096"})}, "InvalidArgument"},
		{"a net sysctl on the node's network", &sandboxapi.CreateSandboxRequest{SandboxID: "bad4-" + harness.RandID(6), BundlePath: bundle(),
			Options: podConfigAny(t, true, map[string]string{"net.ipv4.ip_forward": "1"})}, "InvalidArgument"},
		{"a bundle that does not exist", &sandboxapi.CreateSandboxRequest{SandboxID: "bad5-" + harness.RandID(6), BundlePath: "/run/ex-test/no-such-bundle",
			Options: podConfigAny(t, true, nil)}, "NotFound"},
		{"the running pod's id", &sandboxapi.CreateSandboxRequest{SandboxID: podID, BundlePath: bundle(),
			Options: podConfigAny(t, true, nil)}, "AlreadyExists"},
		{"an invalid id", &sandboxapi.CreateSandboxRequest{SandboxID: "../x", BundlePath: bundle(),
			Options: podConfigAny(t, true, nil)}, "InvalidArgument"},
	}
	for _, c := range creates {
		_, err := sb.CreateSandbox(ctx, c.req)
		if got := direct.ErrClass(err); got != c.want {
			t.Errorf("CreateSandbox with %s: %v (%s), want %s", c.what, err, got, c.want)
		}
		if c.req.SandboxID != podID {
			if hs := harness.HolderProcesses(c.req.SandboxID); len(hs) > 0 {
				t.Errorf("CreateSandbox with %s left a holder: %v", c.what, hs)
			}
		}
		if entries, _ := os.ReadDir(c.req.BundlePath); len(entries) > 0 {
			t.Errorf("CreateSandbox with %s left %d files in its bundle", c.what, len(entries))
		}
	}
	calls := map[string]func() error{
		"StartSandbox": func() error {
			_, err := sb.StartSandbox(ctx, &sandboxapi.StartSandboxRequest{SandboxID: unknown})
			return err
		},
		"Platform": func() error {
			_, err := sb.Platform(ctx, &sandboxapi.PlatformRequest{SandboxID: unknown})
			return err
		},
		"StopSandbox": func() error {
			_, err := sb.StopSandbox(ctx, &sandboxapi.StopSandboxRequest{SandboxID: unknown})
			return err
		},
		"WaitSandbox": func() error {
			_, err := sb.WaitSandbox(ctx, &sandboxapi.WaitSandboxRequest{SandboxID: unknown})
			return err
		},
		"SandboxStatus": func() error {
			_, err := sb.SandboxStatus(ctx, &sandboxapi.SandboxStatusRequest{SandboxID: unknown})
			return err
		},
		"PingSandbox": func() error {
			_, err := sb.PingSandbox(ctx, &sandboxapi.PingRequest{SandboxID: unknown})
			return err
		},
		"SandboxMetrics": func() error {
			_, err := sb.SandboxMetrics(ctx, &sandboxapi.SandboxMetricsRequest{SandboxID: unknown})
			return err
		},
		"UpdateSandbox": func() error {
			_, err := sb.UpdateSandbox(ctx, &sandboxapi.UpdateSandboxRequest{SandboxID: unknown})
			return err
		},
		"ShutdownSandbox": func() error {
			_, err := sb.ShutdownSandbox(ctx, &sandboxapi.ShutdownSandboxRequest{SandboxID: unknown})
			return err
		},
	}
	for name, call := range calls {
		if err := call(); direct.ErrClass(err) != "NotFound" {
			t.Errorf("%s of an unknown sandbox: %v (%s), want NotFound", name, err, direct.ErrClass(err))
		}
	}
	// A second StartSandbox of the running pod is a state error.
	_, err := sb.StartSandbox(ctx, &sandboxapi.StartSandboxRequest{SandboxID: podID})
	if c := direct.ErrClass(err); c != "FailedPrecondition" {
		t.Errorf("StartSandbox of a running pod: %v (%s), want FailedPrecondition", err, c)
	}
}

// startShimDirect runs the shim's `start` for a sandbox the way containerd 2.2's shim
// sandbox controller does (a bundle without config.json, MAX_SHIM_VERSION=2), with no
// containerd behind it, and returns the daemon's socket and pid. Cleanup kills a daemon
// still alive and removes its socket.
func startShimDirect(t *testing.T, bundle, id string) (string, int) {
	t.Helper()
	fakeAddr := filepath.Join(harness.BaseDir, "fake-"+id+".sock")
	cmd := exec.Command(harness.ShimUnderTest(), "-namespace", "sbtest", "-id", id, "-address", fakeAddr, "start")
	cmd.Dir = bundle
	cmd.Env = append(os.Environ(), "MAX_SHIM_VERSION=2", "TTRPC_ADDRESS="+fakeAddr+".ttrpc", "NAMESPACE=sbtest")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("shim start: %v: %s", err, out)
	}
	var answer struct {
		Address string `json:"address"`
	}
	if err := json.Unmarshal(bytes.TrimSpace(out), &answer); err != nil {
		t.Fatalf("shim start answered %q: %v", out, err)
	}
	socket := strings.TrimPrefix(answer.Address, "unix://")
	// The daemon is running by the time start answers; the scan is retried briefly all the
	// same, since a process whose cmdline cannot be read at that moment is skipped (one CI
	// run in the cgroup v2 guest found none, and never again in reruns).
	var daemons []harness.Proc
	if !eventually(2*time.Second, func() bool {
		daemons = harness.Processes(func(a []string) bool { return slicesContainsPair(a, "-socket", socket) })
		return len(daemons) == 1
	}) {
		t.Fatalf("daemons serving %s: %v, want one; the shim binary's processes: %s", socket, daemons, shimProcStates())
	}
	pid := daemons[0].Pid
	t.Cleanup(func() {
		if harness.PidExists(pid) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		_ = os.Remove(socket)
	})
	return socket, pid
}

func slicesContainsPair(args []string, flag, value string) bool {
	for i := 0; i+1 < len(args); i++ {
		if args[i] == flag && args[i+1] == value {
			return true
		}
	}
	return false
}

// shimProcStates lists every process running the shim under test, zombies included (their
// cmdline is empty, so harness.Processes skips them): what a failed scan for a daemon needs.
func shimProcStates() string {
	comm := filepath.Base(harness.ShimUnderTest())
	if len(comm) > 15 {
		comm = comm[:15] // the kernel's TASK_COMM_LEN
	}
	entries, _ := os.ReadDir("/proc")
	var out []string
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if st, err := harness.ReadProcStat(pid); err == nil && st.Comm == comm {
			out = append(out, st.String())
		}
	}
	return fmt.Sprintf("%v", out)
}
