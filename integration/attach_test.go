package integration

import (
	"context"
	"testing"
	"time"

	"github.com/example/containerd-shim-example-v2/integration/harness"
)

// `ctr task attach` to a task started detached: ctr opens the task's own FIFOs again (the
// client that created them is gone) and gets what the FIFO held meanwhile and what the
// container prints from then on, then the task's exit code.
func TestAttachToADetachedTask(t *testing.T) {
	forEachFlavor(t, func(t *testing.T, d *harness.Daemon) {
		ctx, ns := d.NewNamespace(t)
		ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		dout, stderr, code, err := d.Ctr(ctx, ctrRun(d, "-d", harness.ImageName, "att",
			"sh", "-c", "sleep 0.5; echo held; sleep 1.5; for i in 1 2 3 4 5; do echo line $i; sleep 0.1; done; exit 7")...)
		if err != nil || code != 0 {
			t.Fatalf("ctr run -d: exit %d, %v (stderr %q)", code, err, stderr)
		}
		// "held" is printed while no client reads: it waits in the FIFO (the shim holds a
		// reader of its own, so it is not lost when the last client goes).
		time.Sleep(1200 * time.Millisecond)
		stdout, stderr, code, err := d.Ctr(ctx, "task", "attach", "att")
		if err != nil {
			t.Fatalf("ctr task attach: %v (stderr %q)", err, stderr)
		}
		if code != 7 {
			t.Errorf("ctr task attach exit code %d, want the task's 7 (stderr %q)", code, stderr)
		}
		// (On a slow machine ctr run -d, which prints what it reads until it leaves, may still
		// be there for "held": then it has it.)
		if want := "held\nline 1\nline 2\nline 3\nline 4\nline 5\n"; dout+stdout != want {
			t.Errorf("output %q (ctr run -d) + %q (ctr task attach), want %q", dout, stdout, want)
		}
		// ctr task attach deletes the task once it has exited.
		ctrOK(t, ctx, d, "container", "delete", "att")
		expectNoLeftovers(t, d, ns, "att")
	})
}
