package integration

import (
	"context"
	"fmt"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/example/containerd-shim-example-v2/integration/harness"
)

// TestSandboxBench measures what a pod costs: RunPodSandbox latency, the latency from
// RunPodSandbox's start to the first container running, and the resident memory per pod
// (shim + holder for the shim sandboxer; shim + pause process for CRI's podsandbox mode),
// for the shim under test in shim-sandboxer mode, and for containerd's stock runc shim
// (and the shim under test) in podsandbox mode. Host-network pods by default (no CNI in
// the figures), SANDBOX_BENCH_PODS pods per mode (default 5) running side by side, memory
// read SANDBOX_BENCH_SETTLE (default 3 s) after the last one started (after the shims'
// idle trim). Runs only with SANDBOX_BENCH=1; the figures go to the test log
// (docs/kubernetes.md quotes them).
func TestSandboxBench(t *testing.T) {
	if os.Getenv("SANDBOX_BENCH") != "1" {
		t.Skip("benchmark: set SANDBOX_BENCH=1")
	}
	pods := 5
	if n, err := strconv.Atoi(os.Getenv("SANDBOX_BENCH_PODS")); err == nil && n > 0 {
		pods = n
	}
	flavor := harness.FlavorsFromEnv("TEST_SANDBOX_FLAVORS", []string{harness.Flavor2x})[0]
	// SANDBOX_BENCH_NET=pod gives every pod a network of its own (CNI bridge) instead of
	// the node's; needed under containerd 2.2, which crashes on a host-network pod of a
	// shim sandboxer.
	podNet := os.Getenv("SANDBOX_BENCH_NET") == "pod"
	type mode struct {
		name    string
		runtime string // TEST_RUNTIME for the daemon
		handler string
		opts    []harness.DaemonOption
	}
	modes := []mode{
		{"example shim, sandboxer=shim (no pause)", harness.DefaultRuntime, harness.CRIShimHandler, []harness.DaemonOption{harness.WithShimSandboxer()}},
		{"example shim, podsandbox (pause container)", harness.DefaultRuntime, harness.CRIRuntimeHandler, nil},
		{"stock runc-v2 shim, podsandbox (pause container)", "io.containerd.runc.v2", harness.CRIRuntimeHandler, nil},
	}
	var report []string
	for _, m := range modes {
		t.Run(strings.Fields(m.name)[0]+"-"+m.handler, func(t *testing.T) {
			t.Setenv("TEST_RUNTIME", m.runtime)
			opts := m.opts
			if podNet {
				opts = append(opts, harness.WithPodNetwork())
			}
			d, cri := harness.StartCRIDaemon(t, flavor, opts...)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			var runLat, firstLat []time.Duration
			var perPod, perPodAnon []int
			type podProcs struct {
				id, cgroup string
			}
			var all []podProcs
			for i := 0; i < pods; i++ {
				spec := &shimPodSpec{name: fmt.Sprintf("bench-%d-%s", i, harness.RandID(4)), hostNet: !podNet, handler: m.handler}
				start := time.Now()
				pod, took := runShimPod(t, ctx, d, cri, spec)
				runLat = append(runLat, took)
				startCRISleeper(t, ctx, cri, pod, "first", 3900+i)
				firstLat = append(firstLat, time.Since(start))
				all = append(all, podProcs{pod.id, spec.cgroupPath})
			}
			time.Sleep(benchSettle())
			for _, p := range all {
				pm, err := d.ReadPodMemory(p.id, p.cgroup, m.handler == harness.CRIShimHandler)
				if err != nil {
					t.Fatal(err)
				}
				perPod = append(perPod, pm.RSS())
				perPodAnon = append(perPodAnon, pm.Anon())
				t.Logf("pod %s: shim RSS %d KiB (anon %d), holder/pause RSS %d KiB (anon %d)", p.id[:12], pm.Shim.RSS, pm.Shim.Anon, pm.Keeper.RSS, pm.Keeper.Anon)
			}
			line := fmt.Sprintf("%-48s RunPodSandbox median %6.1f ms (min %6.1f, max %6.1f) | to first container running median %6.1f ms | memory per pod RSS median %5d KiB, anon median %5d KiB",
				m.name, ms(median(runLat)), ms(slices.Min(runLat)), ms(slices.Max(runLat)), ms(median(firstLat)), medianInt(perPod), medianInt(perPodAnon))
			t.Log(line)
			report = append(report, line)
		})
	}
	network := "host network"
	if podNet {
		network = "pod network (CNI bridge)"
	}
	t.Logf("containerd %s, %s, %d pods per mode:\n%s", flavor, network, pods, strings.Join(report, "\n"))
}

// benchSettle is how long the pods idle before their memory is read: $SANDBOX_BENCH_SETTLE
// (a Go duration), default 3 s (the shims trim themselves 2 s after their last request).
func benchSettle() time.Duration {
	if d, err := time.ParseDuration(os.Getenv("SANDBOX_BENCH_SETTLE")); err == nil {
		return d
	}
	return 3 * time.Second
}

func median(d []time.Duration) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2]
}

func medianInt(v []int) int {
	s := slices.Clone(v)
	sort.Ints(s)
	return s[len(s)/2]
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
