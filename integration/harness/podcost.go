package harness

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// What a pod costs to start and to keep: the pod config both the sandbox tests and the
// benchmark (cmd/bench) send, and the memory of a running pod, its shim plus the process
// that keeps the pod's namespaces (the shim sandboxer's holder, or the pause process of
// CRI's podsandbox mode). TestSandboxBench and the benchmark's sandbox rows read it here.

// PodSpec is what a pod asks CRI for.
type PodSpec struct {
	Name         string
	UID          string // default: random
	Namespace    string // the Kubernetes namespace; default "default"
	LogDir       string
	CgroupParent string
	HostNetwork  bool // the node's network; otherwise a network namespace of the pod's own (CNI)
	SharePID     bool // shareProcessNamespace
}

// Config is the PodSandboxConfig kubelet would send for the spec: per-container PID
// namespaces unless SharePID, the pod's IPC namespace.
func (s PodSpec) Config() *runtimeapi.PodSandboxConfig {
	ns := &runtimeapi.NamespaceOption{Network: runtimeapi.NamespaceMode_POD, Pid: runtimeapi.NamespaceMode_CONTAINER, Ipc: runtimeapi.NamespaceMode_POD}
	if s.HostNetwork {
		ns.Network = runtimeapi.NamespaceMode_NODE
	}
	if s.SharePID {
		ns.Pid = runtimeapi.NamespaceMode_POD
	}
	uid, kns := s.UID, s.Namespace
	if uid == "" {
		uid = RandID(12)
	}
	if kns == "" {
		kns = "default"
	}
	return &runtimeapi.PodSandboxConfig{
		Metadata:     &runtimeapi.PodSandboxMetadata{Name: s.Name, Uid: uid, Namespace: kns},
		LogDirectory: s.LogDir,
		Linux: &runtimeapi.LinuxPodSandboxConfig{
			CgroupParent:    s.CgroupParent,
			SecurityContext: &runtimeapi.LinuxSandboxSecurityContext{NamespaceOptions: ns},
		},
	}
}

// RunPod calls RunPodSandbox with the runtime handler and reports how long the call took.
func (c *CRI) RunPod(ctx context.Context, cfg *runtimeapi.PodSandboxConfig, handler string) (id string, took time.Duration, err error) {
	start := time.Now()
	r, err := c.Runtime.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: cfg, RuntimeHandler: handler})
	took = time.Since(start)
	if err != nil {
		return "", took, fmt.Errorf("RunPodSandbox %s (handler %s): %w", cfg.GetMetadata().GetName(), handler, err)
	}
	return r.PodSandboxId, took, nil
}

// containerStatePoll is how often WaitContainerState asks: CRI's status calls are cheap, and
// a finer poll would only add load to the daemon under test.
const containerStatePoll = 50 * time.Millisecond

// WaitContainerState polls ContainerStatus until the container is in state, for at most
// timeout.
func (c *CRI) WaitContainerState(ctx context.Context, id string, state runtimeapi.ContainerState, timeout time.Duration) (*runtimeapi.ContainerStatus, error) {
	deadline := time.Now().Add(timeout)
	for {
		r, err := c.Runtime.ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{ContainerId: id})
		if err != nil {
			return nil, fmt.Errorf("ContainerStatus %s: %w", id, err)
		}
		if r.Status.State == state {
			return r.Status, nil
		}
		if time.Now().After(deadline) {
			return r.Status, fmt.Errorf("container %s: state %v, want %v within %v", id, r.Status.State, state, timeout)
		}
		time.Sleep(containerStatePoll)
	}
}

// PodMemory is a running pod's resident memory: its shim and its namespace keeper (holder
// or pause process), each from /proc/<pid>/status.
type PodMemory struct {
	ShimPid, KeeperPid int
	Shim, Keeper       ProcMemory
}

// RSS is the pod's resident memory in KiB (shim + keeper).
func (m PodMemory) RSS() int { return m.Shim.RSS + m.Keeper.RSS }

// Anon is the pod's anonymous resident memory in KiB (shim + keeper).
func (m PodMemory) Anon() int { return m.Shim.Anon + m.Keeper.Anon }

// ReadPodMemory reads what a CRI pod of this daemon costs: its one shim (in CRINamespace,
// named by the pod id) and its keeper, the holder for a shim-sandboxer pod (holder true),
// else the one pause process in the pod's cgroup parent.
func (d *Daemon) ReadPodMemory(id, cgroupParent string, holder bool) (PodMemory, error) {
	var m PodMemory
	shim := d.ShimProcesses(CRINamespace, id)
	if len(shim) != 1 {
		return m, fmt.Errorf("pod %s: shim processes %v, want one", id, shim)
	}
	var keeper []Proc
	if holder {
		keeper = HolderProcesses(id)
	} else {
		keeper = PauseProcessesIn(cgroupParent)
	}
	if len(keeper) != 1 {
		return m, fmt.Errorf("pod %s: holder or pause processes %v, want one", id, keeper)
	}
	m.ShimPid, m.KeeperPid = shim[0].Pid, keeper[0].Pid
	var err error
	if m.Shim, err = ReadProcMemory(m.ShimPid); err != nil {
		return m, err
	}
	if m.Keeper, err = ReadProcMemory(m.KeeperPid); err != nil {
		return m, err
	}
	return m, nil
}

// PauseProcessesIn lists the pause processes (PauseCommand) whose memory cgroup lies under
// cgroupParent: the pause container of a podsandbox-mode pod with that parent.
func PauseProcessesIn(cgroupParent string) []Proc {
	var out []Proc
	for _, p := range Processes(func(a []string) bool { return slices.Equal(a, PauseCommand) }) {
		if cg, err := MemCgroupPath(p.Pid); err == nil && strings.HasPrefix(cg, cgroupParent+"/") {
			out = append(out, p)
		}
	}
	return out
}

// MemCgroupPath is a process's path in the memory hierarchy (cgroup v1) or in the unified
// tree (v2).
func MemCgroupPath(pid int) (string, error) {
	data, err := os.ReadFile(filepath.Join("/proc", fmt.Sprint(pid), "cgroup"))
	if err != nil {
		return "", err
	}
	unified, found := "", false
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.SplitN(line, ":", 3)
		if len(f) != 3 {
			continue
		}
		if slices.Contains(strings.Split(f[1], ","), "memory") {
			return f[2], nil
		}
		if f[0] == "0" && f[1] == "" {
			unified, found = f[2], true
		}
	}
	if !found {
		return "", errors.New("no memory or unified cgroup in /proc/" + fmt.Sprint(pid) + "/cgroup")
	}
	return unified, nil
}
