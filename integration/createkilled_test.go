package integration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/containers"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/oci"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/example/containerd-shim-example-v2/integration/harness"
)

// A runtime killed during its create, after it made the container's cgroups
// but before it recorded the container, leaves those cgroups to its caller:
// its `delete --force` finds no container and removes only its state
// directory. The runtime dies so with the shim, to which it is tethered (an
// OOM kill of the shim, an operator's SIGKILL: containerd's Create fails and
// it runs the shim's `delete`), or by a kill of its own (the shim's Create
// fails). Either way no cgroup of the container may stay, in any hierarchy.
// A createRuntime hook that blocks holds the runtime there. (The stock shim
// leaves them in both cases.)
func TestCreateKilledLeavesNoCgroups(t *testing.T) {
	for _, victim := range []string{"shim", "runtime"} {
		t.Run("killed-"+victim, func(t *testing.T) {
			forEachFlavor(t, func(t *testing.T, d *harness.Daemon) { testCreateKilledLeavesNoCgroups(t, d, victim) })
		})
	}
}

func testCreateKilledLeavesNoCgroups(t *testing.T, d *harness.Daemon, victim string) {
	ctx, ns := d.NewNamespace(t)
	ctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	id := "kc-" + harness.RandID(6)
	marker := filepath.Join(t.TempDir(), "hook.pid")
	var cgroupsPath string
	hook := oci.SpecOpts(func(_ context.Context, _ oci.Client, _ *containers.Container, s *oci.Spec) error {
		if s.Hooks == nil {
			s.Hooks = &specs.Hooks{}
		}
		s.Hooks.CreateRuntime = append(s.Hooks.CreateRuntime, specs.Hook{
			Path: "/bin/sh",
			Args: []string{"sh", "-c", "echo $$ > " + marker + "; exec sleep 37"},
		})
		cgroupsPath = s.Linux.CgroupsPath
		return nil
	})
	ctr := newContainer(t, ctx, d, id, loopArgs, hook)
	if !filepath.IsAbs(cgroupsPath) {
		t.Skipf("cgroups path %q: not a cgroupfs path", cgroupsPath)
	}
	t.Cleanup(func() { _ = harness.RemoveCgroup(cgroupsPath) })

	created := make(chan error, 1)
	go func() {
		task, err := ctr.NewTask(ctx, cio.NullIO)
		if err == nil {
			_, _ = task.Delete(ctx, containerd.WithProcessKill)
		}
		created <- err
	}()
	var hookPid int
	waitFor(t, 20*time.Second, "the createRuntime hook running", func() bool {
		data, err := os.ReadFile(marker)
		if err == nil {
			hookPid, _ = strconv.Atoi(strings.TrimSpace(string(data)))
		}
		return hookPid > 0
	})
	t.Cleanup(func() { _ = syscall.Kill(hookPid, syscall.SIGKILL) })
	victimPid := onlyShim(t, d, ns, id).Pid
	if victim == "runtime" { // the runtime runs its hooks itself
		st, err := harness.ReadProcStat(hookPid)
		if err != nil {
			t.Fatal(err)
		}
		victimPid = st.PPid
	}
	t.Logf("runtime create held in its hook (pid %d); SIGKILL to the %s (%d)", hookPid, victim, victimPid)
	if err := syscall.Kill(victimPid, syscall.SIGKILL); err != nil {
		t.Fatalf("kill %s %d: %v", victim, victimPid, err)
	}
	select {
	case err := <-created:
		if err == nil {
			t.Errorf("NewTask succeeded although its %s was killed during the runtime's create", victim)
		}
	case <-time.After(crashCleanupTimeout):
		t.Fatalf("NewTask did not return within %v of the %s's death", crashCleanupTimeout, victim)
	}
	_ = syscall.Kill(hookPid, syscall.SIGKILL)
	expectNoLeftovers(t, d, ns, id)

	var left []string
	if !eventually(5*time.Second, func() bool {
		left = nil
		for _, h := range harness.CgroupHierarchies() {
			dir := filepath.Join(h, cgroupsPath)
			if _, err := os.Stat(dir); err == nil {
				procs, _ := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
				left = append(left, fmt.Sprintf("%s (processes: %s)", dir, strings.Join(strings.Fields(string(procs)), ",")))
			}
		}
		return len(left) == 0
	}) {
		t.Errorf("cgroups of %s left after its create failed: %s", id, strings.Join(left, "; "))
	}
}
