package integration

import (
	"context"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/example/containerd-shim-example-v2/integration/harness"
)

// A shim daemon's own log (its warnings, a goroutine dump, a Go panic) reaches containerd's log
// through the `log` FIFO of the bundle it was started in: its first task's. Once that task is
// deleted containerd stops reading there, while the daemon goes on serving the rest of its
// group. What it logs then must reach containerd through a bundle containerd still reads. The
// stock shim keeps writing into the deleted task's FIFO, and loses it.
func TestGroupedShimLogOutlivesItsFirstContainer(t *testing.T) {
	if harness.Runtime() == "io.containerd.runc.v2" {
		t.Skip("the stock shim's log stays on its first task's FIFO: the gap this test is about")
	}
	forEachFlavor(t, func(t *testing.T, d *harness.Daemon) {
		ctx, ns := d.NewNamespace(t)
		ctx, cancel := context.WithTimeout(ctx, 90*time.Second)
		defer cancel()
		ann := ownGroupAnnotation() + "=grp-" + harness.RandID(8)
		for _, id := range []string{"c1", "c2"} {
			ctrOK(t, ctx, d, ctrRun(d, append([]string{"-d", "--annotation", ann, harness.ImageName, id}, loopArgs...)...)...)
			waitTaskStatus(t, ctx, d, id, "RUNNING", 10*time.Second)
		}
		shim := onlyShim(t, d, ns, "c1")

		dump := func(what string) {
			t.Helper()
			off := d.LogSize()
			if err := syscall.Kill(shim.Pid, syscall.SIGUSR1); err != nil {
				t.Fatalf("SIGUSR1 to shim %d: %v", shim.Pid, err)
			}
			waitFor(t, 10*time.Second, "the shim's goroutine dump in containerd's log "+what, func() bool {
				return strings.Contains(d.LogSince(off, 4<<20), "goroutine dump (SIGUSR1)")
			})
		}
		dump("while c1 runs")

		ctr, err := d.Client().LoadContainer(ctx, "c1")
		if err != nil {
			t.Fatal(err)
		}
		if err := harness.DeleteContainer(ctx, ctr); err != nil {
			t.Fatalf("delete c1: %v", err)
		}
		dump("after c1, whose bundle the shim started in, was deleted")
		// And again: the FIFO found after the first loss is still the one in use.
		dump("a second time")
	})
}
