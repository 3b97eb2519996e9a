package integration

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containerd/ttrpc"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	sandboxapi "github.com/containerd/containerd/api/runtime/sandbox/v1"

	"github.com/example/containerd-shim-example-v2/integration/harness"
)

// Helpers of the shim-sandboxer tests (sandbox_test.go).

// sandboxFlavors are the containerd releases the Sandbox API tests run under:
// $TEST_SANDBOX_FLAVORS, default 2.2 (the last before the 2.3 bootstrap: task API v2,
// `start` per container) and the newest 2.x (task API v3: containers join the pod's shim
// without `start`). containerd 1.6 has no Sandbox API.
var sandboxFlavors = harness.FlavorsFromEnv("TEST_SANDBOX_FLAVORS", []string{"2.2", harness.Flavor2x})

// updateSandboxLogLine is what the shim logs (at debug, as the harness's daemons run it)
// when it answers UpdateSandbox for a pod it knows.
const updateSandboxLogLine = "sandbox record updated; nothing to apply"

// shimPodSpec is what a shim-mode test pod asks for.
type shimPodSpec struct {
	name       string
	hostNet    bool   // the node's network (no CNI); otherwise the daemon's pod network
	sharePID   bool   // shareProcessNamespace: one PID namespace, the holder its PID 1
	handler    string // default harness.CRIShimHandler
	edit       func(*runtimeapi.PodSandboxConfig)
	cgroupPath string // set by runShimPod: the pod's cgroup parent
}

// runShimPod runs a pod through CRI with the shim sandboxer handler and reports how long
// RunPodSandbox took.
func runShimPod(t *testing.T, ctx context.Context, d *harness.Daemon, cri *harness.CRI, spec *shimPodSpec) (*criPod, time.Duration) {
	t.Helper()
	p, took, err := runShimPodErr(ctx, d, cri, spec)
	if err != nil {
		t.Fatal(err)
	}
	return p, took
}

func runShimPodErr(ctx context.Context, d *harness.Daemon, cri *harness.CRI, spec *shimPodSpec) (*criPod, time.Duration, error) {
	uid := harness.RandID(12)
	spec.cgroupPath = cri.NewCgroupParent()
	handler := spec.handler
	if handler == "" {
		handler = harness.CRIShimHandler
	}
	p := &criPod{logDir: filepath.Join(d.PodLogRoot(), uid)}
	p.config = harness.PodSpec{Name: spec.name, UID: uid, LogDir: p.logDir, CgroupParent: spec.cgroupPath,
		HostNetwork: spec.hostNet, SharePID: spec.sharePID}.Config()
	if spec.edit != nil {
		spec.edit(p.config)
	}
	id, took, err := cri.RunPod(ctx, p.config, handler)
	if err != nil {
		return nil, took, err
	}
	p.id = id
	return p, took, nil
}

// podStatus is PodSandboxStatus of a pod.
func podStatus(t *testing.T, ctx context.Context, cri *harness.CRI, id string) *runtimeapi.PodSandboxStatus {
	t.Helper()
	r, err := cri.Runtime.PodSandboxStatus(ctx, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: id})
	if err != nil {
		t.Fatalf("PodSandboxStatus %s: %v", id, err)
	}
	return r.Status
}

// waitPodNotReady waits until CRI reports the pod NOTREADY. Until
// containerd has processed a killed shim's disconnect, PodSandboxStatus may
// fail ("ttrpc: closed"); kubelet retries, so does this.
func waitPodNotReady(t *testing.T, ctx context.Context, cri *harness.CRI, id, what string) {
	t.Helper()
	waitFor(t, 10*time.Second, "CRI reports the pod NOTREADY "+what, func() bool {
		r, err := cri.Runtime.PodSandboxStatus(ctx, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: id})
		return err == nil && r.Status.State == runtimeapi.PodSandboxState_SANDBOX_NOTREADY
	})
}

// waitPodListedNotReady waits until ListPodSandbox lists the pod NOTREADY.
// The list reads containerd's own record of the pod, which turns NOTREADY
// only once containerd has handled the sandbox's exit (the shim's WaitSandbox
// answer); PodSandboxStatus asks the shim, which knows first. So the list may
// lag the status a little, above all right after a restart, when containerd
// is still recovering its sandboxes; kubelet lists again, so does this.
func waitPodListedNotReady(t *testing.T, ctx context.Context, cri *harness.CRI, id string) {
	t.Helper()
	var last string
	ok := eventually(10*time.Second, func() bool {
		ls, err := cri.Runtime.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{Filter: &runtimeapi.PodSandboxFilter{Id: id}})
		if err != nil {
			last = err.Error()
			return false
		}
		if len(ls.Items) != 1 {
			last = fmt.Sprintf("%d pods listed", len(ls.Items))
			return false
		}
		last = ls.Items[0].State.String()
		return ls.Items[0].State == runtimeapi.PodSandboxState_SANDBOX_NOTREADY
	})
	if !ok {
		t.Errorf("ListPodSandbox: the pod is not listed NOTREADY within 10s (last: %s)", last)
	}
}

// initPid waits for the one process of container id running args and
// returns its pid.
func initPid(t *testing.T, id string, args []string, what string) int {
	t.Helper()
	var pid int
	waitFor(t, 5*time.Second, what, func() bool {
		if ps := processesIn(id, args...); len(ps) == 1 {
			pid = ps[0].Pid
		}
		return pid > 0
	})
	return pid
}

// holderOf returns the pid of the pod's one namespace holder.
func holderOf(t *testing.T, id string) int {
	t.Helper()
	hs := harness.HolderProcesses(id)
	if len(hs) != 1 {
		t.Fatalf("holder processes of pod %s: %v, want exactly one", id, hs)
	}
	return hs[0].Pid
}

// startCRISleeper starts a container whose init is `sleep <secs>` (a distinct number per
// container lets the tests find it) and returns its id and init pid.
func startCRISleeper(t *testing.T, ctx context.Context, cri *harness.CRI, pod *criPod, name string, secs int) (string, int) {
	t.Helper()
	args := []string{"sleep", fmt.Sprint(secs)}
	id := createCRIContainer(t, ctx, cri, pod, name, args, nil)
	startCRIContainer(t, ctx, cri, id, name)
	waitCRIState(t, ctx, cri, id, name, runtimeapi.ContainerState_CONTAINER_RUNNING, 10*time.Second)
	var pid int
	waitFor(t, 5*time.Second, "the init process of "+name, func() bool {
		ps := processesIn(id, args...)
		if len(ps) == 1 {
			pid = ps[0].Pid
		}
		return pid > 0
	})
	return id, pid
}

// execOut runs cmd in a container through CRI's ExecSync and returns its stdout; a non-zero
// exit fails the test.
func execOut(t *testing.T, ctx context.Context, cri *harness.CRI, id string, cmd ...string) string {
	t.Helper()
	r, err := cri.Runtime.ExecSync(ctx, &runtimeapi.ExecSyncRequest{ContainerId: id, Cmd: cmd, Timeout: 10})
	if err != nil {
		t.Fatalf("ExecSync %q in %s: %v", cmd, id, err)
	}
	if r.ExitCode != 0 {
		t.Fatalf("ExecSync %q in %s: exit %d, stderr %q", cmd, id, r.ExitCode, r.Stderr)
	}
	return string(r.Stdout)
}

// nsOf is a process's namespace link (/proc/<pid>/ns/<kind>), e.g. "net:[4026532281]".
func nsOf(t *testing.T, pid int, kind string) string {
	t.Helper()
	l, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/%s", pid, kind))
	if err != nil {
		t.Fatalf("namespace %s of %d: %v", kind, pid, err)
	}
	return l
}

// memCgroupPath is a process's path in the memory hierarchy (v1) or the unified tree (v2).
func memCgroupPath(t *testing.T, pid int) string {
	t.Helper()
	p, err := harness.MemCgroupPath(pid)
	if err != nil {
		t.Fatalf("cgroup of %d: %v", pid, err)
	}
	return p
}

// sandboxClient dials a pod's shim (the socket in its sandbox bundle's `address` file)
// with containerd's own Sandbox API client.
func sandboxClient(t *testing.T, d *harness.Daemon, podID string) sandboxCaller {
	t.Helper()
	addr, err := os.ReadFile(filepath.Join(d.SandboxBundleDir(harness.CRINamespace, podID), "address"))
	if err != nil {
		t.Fatalf("address of pod %s's shim: %v", podID, err)
	}
	sb, _ := dialSandbox(t, socketOf(t, strings.TrimSpace(string(addr))))
	return sb
}

// dialSandbox connects to a shim's socket; the connection is closed by t.Cleanup, or
// earlier through the returned client.
func dialSandbox(t *testing.T, socket string) (sandboxCaller, *ttrpc.Client) {
	t.Helper()
	conn, err := net.Dial("unix", socket)
	if err != nil {
		t.Fatalf("dial %s: %v", socket, err)
	}
	c := ttrpc.NewClient(conn)
	t.Cleanup(func() { c.Close() })
	return sandboxCaller{sandboxapi.NewTTRPCSandboxClient(c), c}, c
}

// sandboxCaller is containerd's Sandbox API client with UpdateSandbox added: the API
// module the tests build with (containerd 2.2's, v1.10) has its request message but not
// the method, which v1.12 (containerd 2.4's) added to the service.
type sandboxCaller struct {
	sandboxapi.TTRPCSandboxService
	c *ttrpc.Client
}

func (s sandboxCaller) UpdateSandbox(ctx context.Context, r *sandboxapi.UpdateSandboxRequest) (*sandboxapi.UpdateSandboxResponse, error) {
	var resp sandboxapi.UpdateSandboxResponse
	if err := s.c.Call(ctx, "containerd.runtime.sandbox.v1.Sandbox", "UpdateSandbox", r, &resp); err != nil {
		return nil, err
	}
	return &resp, nil
}

// runcWrapper writes an OCI runtime that logs each command line to log and runs the runc
// under test: put first on the daemon's PATH as runc (harness.WithRunc), it shows every
// runtime call the shims make. (A handler option BinaryName would do too, but containerd
// 2.2 fails every container of a sandboxer = "shim" handler that has options: its client
// insists on runc options for the task API endpoint. 2.3 fixed that.)
func runcWrapper(t *testing.T) (path, log string) {
	t.Helper()
	real := harness.RuncUnderTest()
	if real == "" {
		var err error
		if real, err = exec.LookPath("runc"); err != nil {
			t.Fatalf("runc: %v", err)
		}
	}
	dir := t.TempDir()
	path, log = filepath.Join(dir, "runc-logged"), filepath.Join(dir, "calls.log")
	script := fmt.Sprintf("#!/bin/sh\nprintf '%%s\\n' \"$*\" >> %q\nexec %q \"$@\"\n", log, real)
	if err := os.WriteFile(path, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return path, log
}

// logMemory records a process's memory in the test log and returns it.
func logMemory(t *testing.T, what string, pid int) harness.ProcMemory {
	t.Helper()
	m, err := harness.ReadProcMemory(pid)
	if err != nil {
		t.Errorf("memory of %s (%d): %v", what, pid, err)
		return m
	}
	t.Logf("%s (pid %d): RSS %d KiB, anonymous %d KiB, file %d KiB", what, pid, m.RSS, m.Anon, m.File)
	return m
}

// stopAndRemove stops and removes a shim-mode pod as kubelet does, and checks that its shim
// leaves and nothing of the pod is left.
func stopAndRemove(t *testing.T, ctx context.Context, d *harness.Daemon, cri *harness.CRI, pod *criPod, spec *shimPodSpec) {
	t.Helper()
	shims := d.ShimProcesses(harness.CRINamespace, pod.id)
	if _, err := cri.Runtime.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: pod.id}); err != nil {
		t.Fatalf("StopPodSandbox: %v", err)
	}
	removeAllOf(t, ctx, cri, pod.id)
	for _, s := range shims {
		waitFor(t, 10*time.Second, "the pod's shim exits", func() bool { return !harness.PidExists(s.Pid) })
	}
	if left := pollLeftovers(10*time.Second, func() []string { return d.SandboxLeftovers(pod.id, spec.cgroupPath) }); len(left) > 0 {
		t.Errorf("left after the pod was removed: %s", strings.Join(left, "; "))
	}
}
