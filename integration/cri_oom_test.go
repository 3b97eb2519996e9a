package integration

import (
	"context"
	"strings"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/example/containerd-shim-example-v2/integration/harness"
)

// OOM kills as kubelet shapes them, through CRI: the limits kubelet sets on a container
// (memory and memory+swap both 15 MiB), and a pod-level limit (the pod's cgroup limited to
// 32 MiB, a container without a limit of its own, and one with a 64 MiB limit it never
// reaches). Each is reported as OOMKilled with 137, and the shim tells whose limit it was:
// the container's own, or an ancestor's.
func TestCRIOOMScope(t *testing.T) {
	for _, flavor := range harness.AllFlavors {
		t.Run("containerd-"+flavor, func(t *testing.T) {
			d, cri := harness.StartCRIDaemon(t, flavor)
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()

			run := func(t *testing.T, pod *criPod, name string, limit int64, scope string) {
				t.Helper()
				logStart := d.LogSize()
				id := createCRIContainer(t, ctx, cri, pod, name, memoryHogArgs, func(c *runtimeapi.ContainerConfig) {
					c.Linux.Resources.MemoryLimitInBytes = limit
					c.Linux.Resources.MemorySwapLimitInBytes = limit
				})
				startCRIContainer(t, ctx, cri, id, name)
				st := waitCRIState(t, ctx, cri, id, name, runtimeapi.ContainerState_CONTAINER_EXITED, 30*time.Second)
				if st.ExitCode != 137 || st.Reason != "OOMKilled" {
					t.Errorf("%s: exit code %d reason %q, want 137 and OOMKilled", name, st.ExitCode, st.Reason)
				}
				// CRI deletes an exited container's task at once: its OOM report is read from
				// the shim's log line in containerd's log, not from introspection.
				expectOOMScopeLogged(t, d, logStart, id, scope)
			}

			t.Run("container-limit", func(t *testing.T) {
				pod := runCRIPod(t, ctx, d, cri, "oom-own-"+harness.RandID(6))
				run(t, pod, "own", 15<<20, "container")
			})
			t.Run("pod-limit", func(t *testing.T) {
				parent := cri.NewCgroupParent()
				limitedCgroup(t, parent, 32<<20) // the daemon's CRI cleanup removes it
				pod, err := runCRIPodIn(ctx, d, cri, "oom-pod-"+harness.RandID(6), harness.CRIRuntimeHandler, parent)
				if err != nil {
					t.Fatal(err)
				}
				run(t, pod, "unlimited", 0, "ancestor")
				run(t, pod, "limit-above", 64<<20, "ancestor")
			})
		})
	}
}

// expectOOMScopeLogged waits for the shim's log line about an OOM kill in container id (as
// containerd copies it into its own log after logStart) and checks the limit it names.
func expectOOMScopeLogged(t *testing.T, d *harness.Daemon, logStart int64, id, scope string) {
	t.Helper()
	if harness.Runtime() != "io.example.v2" {
		return
	}
	var line string
	found := eventually(10*time.Second, func() bool {
		for _, l := range strings.Split(d.LogSince(logStart, 1<<20), "\n") {
			if strings.Contains(l, "OOM kill in container") && strings.Contains(l, "container="+id) {
				line = l
				return true
			}
		}
		return false
	})
	if !found {
		t.Errorf("no shim log line about the OOM kill in %s", id)
	} else if !strings.Contains(line, "limit="+scope) {
		t.Errorf("shim log: %s; want limit=%s", line, scope)
	}
}
