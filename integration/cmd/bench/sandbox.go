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

// Pods without pause containers (issue 13), containerd 2.x lanes only: what a pod costs to
// start and to keep when this shim is the pod's sandboxer (handler harness.CRIShimHandler,
// sandboxer = "shim": a holder process, no pause container) against containerd's stock
// runc-v2 shim in CRI's podsandbox mode (a pause container). Column A is stock/podsandbox,
// B this shim/shim sandboxer. The pods are host-network (no CNI in the figures) and stay
// up side by side, sandboxPods per shim, until their memory is read settleTime after the
// last one started, the way TestSandboxBench measures them.

// sandboxSampleEvery is how often the memory window reads the pods: CRI's metrics period
// under containerd 2.4, so the window sees each poll's effect once.
const sandboxSampleEvery = time.Second

// sbxPod is one pod of the sandbox rows.
type sbxPod struct {
	criPod
	holder bool // a shim-sandboxer pod (holder), else podsandbox (pause process)
}

func (b *bench) sandboxPods() error {
	if !b.d.Is2x() {
		return nil // no Sandbox API before containerd 2.0
	}
	cri, err := b.criClient()
	if err != nil {
		return err
	}
	run := b.newSample("sbx-run", "pod sandbox: RunPodSandbox (A stock, pause container; B sandboxer = \"shim\", no pause)", "ms", true)
	first := b.newSample("sbx-first", "pod sandbox: RunPodSandbox start → first container running (same modes)", "ms", true)
	rss := b.newSample("sbx-rss", "pod sandbox: memory per pod, RSS of shim + pause (A) / shim + holder (B)", "KiB", true)
	anon := b.newSample("sbx-anon", "pod sandbox: memory per pod, anonymous (same processes)", "KiB", true)
	shimRSS := b.newSample("sbx-shim-rss", "pod sandbox: the pod's shim alone, RSS", "KiB", true)
	window := fmt.Sprintf("%ds", int(b.cfg.sandboxWindow.Seconds()))
	rssMean := b.newSample("sbx-rss-mean", "pod sandbox: memory per pod, RSS, mean over the next "+window+" (CRI polls metrics meanwhile)", "KiB", true)
	anonMean := b.newSample("sbx-anon-mean", "pod sandbox: memory per pod, anonymous, mean over the next "+window, "KiB", true)
	var pods []*sbxPod
	defer func() {
		for _, p := range pods {
			b.removeCRIPod(cri, &p.criPod)
		}
	}()
	if err := b.both(b.cfg.sandboxPods, func(rt string) error {
		p, runTook, firstTook, err := b.runSandboxPod(cri, rt)
		if p != nil {
			pods = append(pods, p)
		}
		if err != nil {
			return err
		}
		run.add(rt, ms(runTook))
		first.add(rt, ms(firstTook))
		return nil
	}); err != nil {
		return err
	}
	time.Sleep(settleTime)
	for _, p := range pods {
		m, err := b.d.ReadPodMemory(p.id, p.parent, p.holder)
		if err != nil {
			return err
		}
		rt := runtimeA
		if p.holder {
			rt = runtimeB
		}
		rss.add(rt, float64(m.RSS()))
		anon.add(rt, float64(m.Anon()))
		shimRSS.add(rt, float64(m.Shim.RSS))
	}
	// Then once a second for the window: under containerd 2.4 the shims are asked for
	// metrics every second, and what they hold between their trims is what a pod costs.
	sums := make([]struct{ rss, anon, n int }, len(pods))
	for end := time.Now().Add(b.cfg.sandboxWindow); time.Now().Before(end); {
		time.Sleep(sandboxSampleEvery)
		for i, p := range pods {
			m, err := b.d.ReadPodMemory(p.id, p.parent, p.holder)
			if err != nil {
				return err
			}
			sums[i].rss += m.RSS()
			sums[i].anon += m.Anon()
			sums[i].n++
		}
	}
	for i, p := range pods {
		if sums[i].n == 0 {
			continue
		}
		rt := runtimeA
		if p.holder {
			rt = runtimeB
		}
		rssMean.add(rt, float64(sums[i].rss)/float64(sums[i].n))
		anonMean.add(rt, float64(sums[i].anon)/float64(sums[i].n))
	}
	b.res.notes = append(b.res.notes, fmt.Sprintf("Pod sandbox rows: A = `%s` in CRI's podsandbox mode (a pause container), "+
		"B = `%s` with `sandboxer = \"shim\"` (a holder process, no pause container); %d host-network pods per shim, "+
		"all running side by side, memory read %s after the last one's first container started, "+
		"then once a second for %s (the *mean* rows).",
		runtimeA, runtimeB, b.cfg.sandboxPods, settleTime, b.cfg.sandboxWindow))
	return nil
}

// runSandboxPod runs one pod of the shim's mode and its first container (`sleep`), and
// reports how long RunPodSandbox took and how long from its start until the container ran.
// A pod made before an error is returned with it, to be removed.
func (b *bench) runSandboxPod(cri *harness.CRI, rt string) (*sbxPod, time.Duration, time.Duration, error) {
	name := b.id("sbx")
	logDir := filepath.Join(b.d.PodLogRoot(), name)
	if err := os.MkdirAll(logDir, 0o755); err != nil {
		return nil, 0, 0, err
	}
	p := &sbxPod{criPod: criPod{parent: "/" + b.ns + "-" + name}, holder: rt == runtimeB}
	handler := handlerA
	if p.holder {
		handler = harness.CRIShimHandler
	}
	cfg := harness.PodSpec{Name: name, UID: b.ns + "-" + name, Namespace: b.ns, LogDir: logDir,
		CgroupParent: p.parent, HostNetwork: true}.Config()
	ctx, cancel := context.WithTimeout(context.Background(), criTimeout)
	defer cancel()
	t0 := time.Now()
	id, runTook, err := cri.RunPod(ctx, cfg, handler)
	if err != nil {
		return nil, 0, 0, err
	}
	p.id = id
	cc, err := cri.Runtime.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: p.id, SandboxConfig: cfg, Config: &runtimeapi.ContainerConfig{
		Metadata: &runtimeapi.ContainerMetadata{Name: "first"},
		Image:    &runtimeapi.ImageSpec{Image: harness.ImageName},
		Command:  []string{"sleep"},
		Args:     []string{"100000"},
		LogPath:  "first.log",
		Linux:    &runtimeapi.LinuxContainerConfig{Resources: &runtimeapi.LinuxContainerResources{}},
	}})
	if err != nil {
		return p, 0, 0, fmt.Errorf("CreateContainer: %w", err)
	}
	p.ctr = cc.ContainerId
	if _, err := cri.Runtime.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: p.ctr}); err != nil {
		return p, 0, 0, fmt.Errorf("StartContainer: %w", err)
	}
	if _, err := cri.WaitContainerState(ctx, p.ctr, runtimeapi.ContainerState_CONTAINER_RUNNING, criTimeout); err != nil {
		return p, 0, 0, err
	}
	return p, runTook, time.Since(t0), nil
}
