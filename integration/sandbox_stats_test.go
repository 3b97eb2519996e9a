package integration

import (
	"context"
	"os"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/example/containerd-shim-example-v2/integration/harness"
)

// TestSandboxStatsWithoutCgroupParent: a shim-mode pod without a cgroup parent (kubelet with
// --cgroups-per-qos=false, or crictl). In pause-container mode the pause container gets
// containerd's default cgroup /k8s.io/<id>, and the pod's statistics are its. The holder must
// get the same, and the pod statistics: a pod that has none fails ListPodSandboxStats for
// every pod of the node (containerd joins the errors). Removal leaves no cgroup.
func TestSandboxStatsWithoutCgroupParent(t *testing.T) {
	d, cri := harness.StartCRIDaemon(t, harness.Flavor2x, harness.WithPodNetwork(), harness.WithShimSandboxer())
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	with, _ := runShimPod(t, ctx, d, cri, &shimPodSpec{name: "withparent-" + harness.RandID(6)})
	spec := &shimPodSpec{name: "noparent-" + harness.RandID(6), edit: func(c *runtimeapi.PodSandboxConfig) {
		c.Linux.CgroupParent = ""
	}}
	without, _ := runShimPod(t, ctx, d, cri, spec)
	cg := "/" + harness.CRINamespace + "/" + without.id
	if got := memCgroupPath(t, holderOf(t, without.id)); got != cg {
		t.Errorf("holder of a pod without a cgroup parent: cgroup %s, want %s", got, cg)
	}
	r, err := cri.Runtime.ListPodSandboxStats(ctx, &runtimeapi.ListPodSandboxStatsRequest{})
	if err != nil {
		t.Fatalf("ListPodSandboxStats: %v", err)
	}
	got := map[string]bool{}
	for _, s := range r.Stats {
		got[s.GetAttributes().GetId()] = true
	}
	if !got[with.id] || !got[without.id] {
		t.Errorf("ListPodSandboxStats lists %v, want both pods %s and %s", got, with.id, without.id)
	}
	stopAndRemove(t, ctx, d, cri, without, spec)
	for _, h := range harness.CgroupHierarchies() {
		if _, err := os.Stat(h + cg); err == nil {
			t.Errorf("cgroup %s%s left after the pod was removed", h, cg)
		}
	}
}
