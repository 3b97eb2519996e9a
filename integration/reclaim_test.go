package integration

import (
	"context"
	"os"
	"syscall"
	"testing"
	"time"

	v1stats "github.com/containerd/cgroups/v3/cgroup1/stats"
	v2stats "github.com/containerd/cgroups/v3/cgroup2/stats"
	"github.com/containerd/containerd/v2/pkg/cio"
	"google.golang.org/protobuf/proto"

	"github.com/example/containerd-shim-example-v2/integration/harness"
)

// A task's runtime state and cgroup are removed at its init's exit, before
// containerd asks for Delete (process/reclaim.go), and the stopped task still
// answers as before: `ctr task ls` lists it STOPPED, Metrics gives the
// cgroup's last statistics, and Delete its exit status. (Named for the v2
// lane's TestMetrics selection.)
func TestMetricsAfterExit(t *testing.T) {
	if harness.Runtime() != "io.example.v2" {
		t.Skipf("the runtime is removed at the exit by io.example.v2 only, not %s", harness.Runtime())
	}
	forEachFlavor(t, func(t *testing.T, d *harness.Daemon) {
		ctx, ns := d.NewNamespace(t)
		ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		const id = "gone1"
		ctr := newContainer(t, ctx, d, id, loopArgs)
		task, exitc := startTask(t, ctx, ctr, cio.NullIO)
		cg := cgroupOf(t, task.Pid())
		state := harness.RuncStateDir(ns, id)
		if _, err := os.Stat(state); err != nil {
			t.Fatalf("runtime state of the running task: %v", err)
		}

		if err := task.Kill(ctx, syscall.SIGKILL); err != nil {
			t.Fatalf("kill: %v", err)
		}
		select {
		case st := <-exitc:
			if st.ExitCode() != 137 {
				t.Fatalf("exit status %d, want 137", st.ExitCode())
			}
		case <-ctx.Done():
			t.Fatal("no exit after SIGKILL")
		}
		gone := func(path string) bool { _, err := os.Stat(path); return os.IsNotExist(err) }
		waitFor(t, 10*time.Second, "runtime state and cgroup removed after the exit", func() bool {
			return gone(state) && gone(cg.dir("memory"))
		})
		waitTaskStatus(t, ctx, d, id, "STOPPED", 5*time.Second)

		m, err := task.Metrics(ctx)
		if err != nil {
			t.Fatalf("metrics of the stopped task: %v", err)
		}
		if cg.v2 {
			var s v2stats.Metrics
			if err := proto.Unmarshal(m.GetData().GetValue(), &s); err != nil || m.GetData().GetTypeUrl() != "io.containerd.cgroups.v2.Metrics" {
				t.Fatalf("metrics %q: %v", m.GetData().GetTypeUrl(), err)
			}
			if s.GetCPU().GetUsageUsec() == 0 || s.GetMemory() == nil {
				t.Errorf("the last statistics lack cpu or memory: %v", &s)
			}
		} else {
			var s v1stats.Metrics
			if err := proto.Unmarshal(m.GetData().GetValue(), &s); err != nil || m.GetData().GetTypeUrl() != "io.containerd.cgroups.v1.Metrics" {
				t.Fatalf("metrics %q: %v", m.GetData().GetTypeUrl(), err)
			}
			if s.GetCPU().GetUsage().GetTotal() == 0 || s.GetMemory() == nil {
				t.Errorf("the last statistics lack cpu or memory: %v", &s)
			}
		}

		st, err := task.Delete(ctx)
		if err != nil {
			t.Fatalf("delete: %v", err)
		}
		if st.ExitCode() != 137 {
			t.Errorf("Delete reports exit status %d, want 137", st.ExitCode())
		}
		expectNoLeftovers(t, d, ns, id)
	})
}
