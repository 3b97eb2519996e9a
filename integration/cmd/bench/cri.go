package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/example/containerd-shim-example-v2/integration/harness"
)

// Kubernetes' view: exec probes (CRI ExecSync, as kubelet runs an exec
// liveness or readiness probe) and a pod's start, through the lane daemon's
// CRI plugin with one runtime handler per shim.

// criTimeout bounds one CRI call.
const criTimeout = 60 * time.Second

// probeBlock is how many probes one shim gets before the other's turn.
const probeBlock = 20

func (b *bench) criSteps() error {
	cri, err := b.criClient()
	if err != nil {
		return err
	}
	if err := b.execProbes(cri); err != nil {
		return err
	}
	return b.criPodStart(cri)
}

func handlerOf(rt string) string {
	if rt == runtimeA {
		return handlerA
	}
	return handlerB
}

// execProbes: ExecSync of `true` on a running container, repeatedly; latency
// and the pod shim's CPU time per 1000 probes.
func (b *bench) execProbes(cri *harness.CRI) error {
	lat50 := b.newSample("probe-p50", "CRI ExecSync `true` (exec probe): latency p50", "ms", true)
	lat99 := b.newSample("probe-p99", "CRI ExecSync `true` (exec probe): latency p99", "ms", true)
	lat99.pct = 99
	cpu := b.newSample("probe-cpu", "CRI ExecSync `true`: shim CPU per 1000 probes", "CPU-s", true)
	pods := map[string]*criPod{}
	for _, rt := range []string{runtimeA, runtimeB} {
		p, err := b.runCRIPod(cri, handlerOf(rt), []string{"sleep", "100000"})
		if err != nil {
			return err
		}
		defer b.removeCRIPod(cri, p)
		if p.shim, err = b.shimPid(harness.CRINamespace, p.id); err != nil {
			return err
		}
		pods[rt] = p
	}
	cpuUsed, probes := map[string]float64{}, map[string]int{}
	if err := b.both((b.cfg.probes+probeBlock-1)/probeBlock, func(rt string) error {
		p := pods[rt]
		cpu0 := cpuSeconds(p.shim)
		for i := 0; i < probeBlock; i++ {
			ctx, cancel := context.WithTimeout(context.Background(), criTimeout)
			t0 := time.Now()
			r, err := cri.Runtime.ExecSync(ctx, &runtimeapi.ExecSyncRequest{ContainerId: p.ctr, Cmd: []string{"true"}, Timeout: 10})
			d := time.Since(t0)
			cancel()
			if err != nil {
				return fmt.Errorf("ExecSync: %w", err)
			}
			if r.ExitCode != 0 {
				return fmt.Errorf("ExecSync `true` exited %d: %s", r.ExitCode, r.Stderr)
			}
			lat50.add(rt, ms(d))
			lat99.add(rt, ms(d))
		}
		cpuUsed[rt] += cpuSeconds(p.shim) - cpu0
		probes[rt] += probeBlock
		return nil
	}); err != nil {
		return err
	}
	for _, rt := range []string{runtimeA, runtimeB} {
		cpu.add(rt, cpuUsed[rt]/float64(probes[rt])*1000)
	}
	return nil
}

// criPodStart: RunPodSandbox -> CreateContainer -> StartContainer of one
// container, as kubelet starts a one-container pod.
func (b *bench) criPodStart(cri *harness.CRI) error {
	s := b.newSample("cri-pod-start", "CRI RunPodSandbox → CreateContainer → StartContainer (one container)", "ms", true)
	return b.both(b.cfg.podStarts, func(rt string) error {
		t0 := time.Now()
		p, err := b.runCRIPod(cri, handlerOf(rt), []string{"sleep", "100000"})
		if err != nil {
			return err
		}
		s.add(rt, ms(time.Since(t0)))
		b.removeCRIPod(cri, p)
		return nil
	})
}

type criPod struct {
	id, ctr string
	parent  string // cgroup parent
	shim    int
}

// runCRIPod runs a pod with host networking and one started container.
func (b *bench) runCRIPod(cri *harness.CRI, handler string, args []string) (*criPod, error) {
	name := b.id("pod")
	logDir := filepath.Join(b.d.PodLogRoot(), name)
	if err := os.MkdirAll(logDir, 0o755); err != nil {
		return nil, err
	}
	p := &criPod{parent: "/" + b.ns + "-" + name}
	cfg := &runtimeapi.PodSandboxConfig{
		Metadata:     &runtimeapi.PodSandboxMetadata{Name: name, Uid: b.ns + "-" + name, Namespace: b.ns},
		LogDirectory: logDir,
		Linux: &runtimeapi.LinuxPodSandboxConfig{
			CgroupParent: p.parent,
			SecurityContext: &runtimeapi.LinuxSandboxSecurityContext{
				NamespaceOptions: &runtimeapi.NamespaceOption{
					Network: runtimeapi.NamespaceMode_NODE,
					Pid:     runtimeapi.NamespaceMode_CONTAINER,
					Ipc:     runtimeapi.NamespaceMode_POD,
				},
			},
		},
	}
	ctx, cancel := context.WithTimeout(context.Background(), criTimeout)
	defer cancel()
	r, err := cri.Runtime.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: cfg, RuntimeHandler: handler})
	if err != nil {
		return nil, fmt.Errorf("RunPodSandbox (handler %s): %w", handler, err)
	}
	p.id = r.PodSandboxId
	cc, err := cri.Runtime.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: p.id, SandboxConfig: cfg, Config: &runtimeapi.ContainerConfig{
		Metadata: &runtimeapi.ContainerMetadata{Name: "c"},
		Image:    &runtimeapi.ImageSpec{Image: harness.ImageName},
		Command:  args[:1],
		Args:     args[1:],
		LogPath:  "c.log",
		Linux:    &runtimeapi.LinuxContainerConfig{Resources: &runtimeapi.LinuxContainerResources{}},
	}})
	if err != nil {
		b.removeCRIPod(cri, p)
		return nil, fmt.Errorf("CreateContainer: %w", err)
	}
	p.ctr = cc.ContainerId
	if _, err := cri.Runtime.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: p.ctr}); err != nil {
		b.removeCRIPod(cri, p)
		return nil, fmt.Errorf("StartContainer: %w", err)
	}
	return p, nil
}

// removeCRIPod stops and removes a pod and its containers, and its cgroup parent.
func (b *bench) removeCRIPod(cri *harness.CRI, p *criPod) {
	ctx, cancel := context.WithTimeout(context.Background(), criTimeout)
	defer cancel()
	if _, err := cri.Runtime.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: p.id}); err != nil {
		fmt.Fprintf(os.Stderr, "bench: StopPodSandbox %s: %v\n", p.id, err)
	}
	if _, err := cri.Runtime.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: p.id}); err != nil {
		fmt.Fprintf(os.Stderr, "bench: RemovePodSandbox %s: %v\n", p.id, err)
	}
	// The shim leaves after the pod's last task; the cgroups go with the runtime's delete.
	for i := 0; i < 50 && harness.RemoveCgroup(p.parent) != nil; i++ {
		time.Sleep(100 * time.Millisecond)
	}
}
