package integration

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/cio"

	"github.com/example/containerd-shim-example-v2/integration/harness"
)

// Memory budget of an idle shim holding one container. The gate keeps memory
// from regressing silently; the figures to beat (and how they compare with
// containerd's stock shim) are in docs/benchmarks.md.
const (
	// idleRSSBudgetKiB bounds the resident set (code, data and heap): about
	// 4 MiB measured (docs/benchmarks.md), with room for noise. It holds for a
	// binary installed as `make install` does (harness copyFile); see
	// docs/benchmarks.md for kernels that cache a binary in 2 MiB folios.
	idleRSSBudgetKiB = 5 << 10
	// idleAnonBudgetKiB bounds anonymous memory (heap, stacks, runtime):
	// what each additional shim process really costs the machine. 1.5-2.1
	// MiB measured since the shim links plain structs instead of protobuf
	// packages (proto/api; 2.4-2.65 before, 2.7-2.95 before the generated
	// codec), with room for noise (docs/benchmarks.md says where the bytes
	// go). (Not Private_Dirty: a freshly copied binary's page-cache pages
	// count as dirty until written back.)
	idleAnonBudgetKiB = 2560
	// settleTime lets the daemon reach its idle state (it trims 2 s after
	// the last request).
	settleTime = 3500 * time.Millisecond
)

func TestIdleShimMemoryBudget(t *testing.T) {
	if harness.Runtime() != "io.example.v2" {
		t.Skipf("the budget is for io.example.v2, not %s", harness.Runtime())
	}
	forEachFlavor(t, func(t *testing.T, d *harness.Daemon) {
		ctx, ns := d.NewNamespace(t)
		c := newContainer(t, ctx, d, "mem1", []string{"sleep", "100000"})
		task, _ := startTask(t, ctx, c, cio.NullIO)
		defer task.Delete(ctx, containerd.WithProcessKill)
		time.Sleep(settleTime)
		shims := d.ShimProcesses(ns, "mem1")
		if len(shims) != 1 {
			t.Fatalf("want one shim process, found %v", shims)
		}
		m := smapsRollup(t, shims[0].Pid)
		t.Logf("idle shim: Rss %d KiB, Anonymous %d KiB (budgets %d / %d KiB)",
			m["Rss"], m["Anonymous"], idleRSSBudgetKiB, idleAnonBudgetKiB)
		if m["Rss"] == 0 || m["Rss"] > idleRSSBudgetKiB {
			t.Errorf("idle shim RSS %d KiB exceeds the budget of %d KiB", m["Rss"], idleRSSBudgetKiB)
		}
		if m["Anonymous"] == 0 || m["Anonymous"] > idleAnonBudgetKiB {
			t.Errorf("idle shim anonymous memory %d KiB exceeds the budget of %d KiB; its largest anonymous mappings:\n%s",
				m["Anonymous"], idleAnonBudgetKiB, largeAnonMappings(shims[0].Pid, 256))
		}
	})
}

func smapsRollup(t *testing.T, pid int) map[string]int {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string]int{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if f := strings.Fields(v); ok && len(f) > 0 {
			out[k], _ = strconv.Atoi(f[0])
		}
	}
	return out
}

// largeAnonMappings lists the mappings of pid with at least minKiB of anonymous memory (and
// whether huge pages back them), to tell heap growth from a huge page or a mapped table.
func largeAnonMappings(pid, minKiB int) string {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps", pid))
	if err != nil {
		return err.Error()
	}
	var out strings.Builder
	var header string
	for _, line := range strings.Split(string(raw), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		if !strings.HasSuffix(f[0], ":") {
			header = line
			continue
		}
		if f[0] == "Anonymous:" || f[0] == "AnonHugePages:" {
			if n, _ := strconv.Atoi(f[1]); n >= minKiB {
				fmt.Fprintf(&out, "  %s  %s %d kB\n", header, f[0], n)
			}
		}
	}
	return out.String()
}
