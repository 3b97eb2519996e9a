package integration

import (
	"context"
	"os"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/example/containerd-shim-example-v2/integration/harness"
)

// A shim-mode pod whose containers do not share a PID namespace (kubelet's default,
// shareProcessNamespace false: the sandbox asks for Pid CONTAINER) never puts a container
// in the node's PID namespace. CRI builds a container's namespaces from the sandbox's pid,
// and a container whose own config leaves its namespace options out (crictl's sample
// container config does, and CRI reads that as Pid POD) gets the PID namespace of the
// sandbox's process: a pause container's is one of its own, so the holder's must be too,
// or the container sees and can signal every process of the node. A container that asks for
// Pid CONTAINER, as kubelet's do, gets one of its own in either case. (A pod network, not
// the node's: containerd 2.2 panics on a host-network pod of a shim sandboxer.)
func TestSandboxPodPIDNamespace(t *testing.T) {
	for _, flavor := range sandboxFlavors {
		t.Run("containerd-"+flavor, func(t *testing.T) {
			d, cri := harness.StartCRIDaemon(t, flavor, harness.WithPodNetwork(), harness.WithShimSandboxer())
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()

			pod, _ := runShimPod(t, ctx, d, cri, &shimPodSpec{name: "pidns-" + harness.RandID(6)})
			if got := pod.config.GetLinux().GetSecurityContext().GetNamespaceOptions().GetPid(); got != runtimeapi.NamespaceMode_CONTAINER {
				t.Fatalf("the pod asks for PID mode %v, want CONTAINER (no shared PID namespace)", got)
			}
			node := nsOf(t, os.Getpid(), "pid")
			holder := nsOf(t, holderOf(t, pod.id), "pid")
			if holder == node {
				t.Errorf("the holder's PID namespace is the node's %s (a pause container has one of its own)", node)
			}

			// No namespace options in the container's config: CRI joins the sandbox's.
			_, pid := startCRISleeper(t, ctx, cri, pod, "plain", 3611)
			if got := nsOf(t, pid, "pid"); got == node {
				t.Errorf("a container without namespace options runs in the node's PID namespace %s", got)
			} else if got != holder {
				t.Errorf("a container without namespace options: PID namespace %s, want the sandbox's %s", got, holder)
			}

			// Pid CONTAINER, as kubelet sends it: one of its own.
			args := []string{"sleep", "3612"}
			id := createCRIContainer(t, ctx, cri, pod, "own", args, func(c *runtimeapi.ContainerConfig) {
				c.Linux.SecurityContext = &runtimeapi.LinuxContainerSecurityContext{NamespaceOptions: &runtimeapi.NamespaceOption{
					Network: runtimeapi.NamespaceMode_POD, Pid: runtimeapi.NamespaceMode_CONTAINER, Ipc: runtimeapi.NamespaceMode_POD}}
			})
			startCRIContainer(t, ctx, cri, id, "own")
			own := initPid(t, id, args, "the init process of own")
			if got := nsOf(t, own, "pid"); got == node || got == holder {
				t.Errorf("a container with Pid CONTAINER: PID namespace %s (node %s, sandbox %s), want one of its own", got, node, holder)
			}
		})
	}
}
