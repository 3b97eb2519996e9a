package integration

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/pkg/cio"

	"github.com/example/containerd-shim-example-v2/integration/harness"
)

// The launch contract changed in containerd 2.3: `start` gets BootstrapParams on stdin and a
// protobuf BootstrapResult is expected back; up to 2.2, stdin holds the bare options Any and
// the answer is JSON. A shim that answers the wrong form breaks the daemon (a 2.2 daemon
// reading protobuf bytes as an address: containerd #13763). These tests put this shim
// under each side of that line, and across it on one node: containers started under one
// release must stay manageable after the node's containerd is replaced by the other, in
// both directions (an upgrade, and a rollback), because the shims outlive containerd.
//
// The two releases are the last before the change (2.2) and the newest (2.x = 2.4).
const compatOld = "2.2"

// bootstrapVersionOf reads the task API version containerd recorded for a task's shim.
func bootstrapVersionOf(t *testing.T, d *harness.Daemon, ns, id string) int {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(d.BundleDir(ns, id), "bootstrap.json"))
	if err != nil {
		t.Fatalf("bootstrap.json of %s: %v", id, err)
	}
	var b struct {
		Version int `json:"version"`
	}
	if err := json.Unmarshal(raw, &b); err != nil {
		t.Fatalf("bootstrap.json of %s: %v (%s)", id, err, raw)
	}
	return b.Version
}

// TestCompatContainerdUpgradeAndRollback: containers started under one containerd release
// keep running when containerd is replaced by another on the same root and state (the
// shims are not restarted), and the new daemon manages them: it lists them RUNNING with
// the same pids, execs into them, kills and deletes them with the right exit codes, and
// starts new containers through the shim. Upgrade 2.2 -> 2.x (shims that answered JSON v2,
// now driven by a daemon that launches shims with BootstrapParams) and rollback 2.x -> 2.2
// (shims that answered protobuf v3, now driven by the older daemon).
func TestCompatContainerdUpgradeAndRollback(t *testing.T) {
	for _, c := range []struct{ name, from, to string }{
		{"upgrade", compatOld, harness.Flavor2x},
		{"rollback", harness.Flavor2x, compatOld},
	} {
		t.Run(c.name+"-"+c.from+"-to-"+c.to, func(t *testing.T) {
			d := harness.StartDaemon(t, c.from)
			ctx, ns := d.NewNamespace(t)
			restartForCleanup(t, d)
			ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
			defer cancel()

			wantBefore := 2
			if harness.FlavorAtLeast(c.from, "2.3") {
				wantBefore = 3
			}
			old := map[string]taskRow{}
			// up-b ends on SIGTERM with 7 (its own handler: a PID 1 without one ignores TERM).
			for id, args := range map[string][]string{"up-a": loopArgs, "up-b": {"sh", "-c", `trap "exit 7" TERM; while :; do sleep 0.2; done`}} {
				startTask(t, ctx, newContainer(t, ctx, d, id, args), cio.NullIO)
				if v := bootstrapVersionOf(t, d, ns, id); v != wantBefore {
					t.Errorf("%s under containerd %s: bootstrap.json version %d, want %d", id, c.from, v, wantBefore)
				}
			}
			for id, row := range ctrTaskList(t, ctx, d) {
				old[id] = row
			}

			if err := d.StopProcess(); err != nil {
				t.Fatal(err)
			}
			if err := d.SwitchFlavor(c.to); err != nil {
				t.Fatal(err)
			}
			if err := d.StartProcess(); err != nil {
				t.Fatalf("start containerd %s on %s's state: %v", c.to, c.from, err)
			}

			now := ctrTaskList(t, ctx, d)
			for id, was := range old {
				if row := now[id]; row.Status != "RUNNING" || row.Pid != was.Pid {
					t.Errorf("%s after the switch to %s: %+v, want RUNNING with pid %d", id, c.to, row, was.Pid)
				}
			}
			out := ctrOK(t, ctx, d, "task", "exec", "--fifo-dir", d.FIFODir, "--exec-id", "after", "up-a", "sh", "-c", "echo still-here")
			if out != "still-here\n" {
				t.Errorf("exec after the switch: %q, want %q", out, "still-here\n")
			}
			a := loadTask(t, ctx, d, "up-a")
			if code := runExec(t, ctx, a, "code", "sh", "-c", "exit 9"); code != 9 {
				t.Errorf("exec exit code after the switch: %d, want 9", code)
			}
			statusC, err := a.Wait(ctx)
			if err != nil {
				t.Fatalf("wait up-a: %v", err)
			}
			if err := a.Kill(ctx, syscall.SIGKILL); err != nil {
				t.Fatalf("kill up-a: %v", err)
			}
			if code := exitCode(t, ctx, statusC); code != 137 {
				t.Errorf("up-a killed after the switch: exit code %d, want 137", code)
			}
			if st, err := a.Delete(ctx); err != nil || st.ExitCode() != 137 {
				t.Errorf("delete up-a: %v, exit code %d, want 137", err, st.ExitCode())
			}

			// A container started after the switch settles on the new release's form.
			stdout, stderr, code, err := d.Ctr(ctx, ctrRun(d, "--rm", harness.ImageName, "up-new", "sh", "-c", "echo new; exit 4")...)
			if err != nil || code != 4 || stdout != "new\n" {
				t.Errorf("ctr run under %s after the switch: code %d err %v stdout %q stderr %q", c.to, code, err, stdout, stderr)
			}
			b := loadTask(t, ctx, d, "up-b")
			statusC, err = b.Wait(ctx)
			if err != nil {
				t.Fatalf("wait up-b: %v", err)
			}
			if err := b.Kill(ctx, syscall.SIGTERM); err != nil {
				t.Fatalf("kill up-b: %v", err)
			}
			if code := exitCodeWithin(t, ctx, statusC, 10*time.Second); code != 7 {
				t.Errorf("up-b after SIGTERM: exit code %d, want 7", code)
			}
			if _, err := b.Delete(ctx); err != nil {
				t.Errorf("delete up-b: %v", err)
			}
			for _, id := range []string{"up-a", "up-b", "up-new"} {
				expectNoLeftovers(t, d, ns, id)
			}
		})
	}
}

// TestCompatBootstrapOptIn: a 2.2 daemon told to expect Task API v3 (the operator's
// EXAMPLE_SHIM_TASK_API=3 in the shim manager's env) gets the JSON version 3 answer and
// works with it; under the newest 2.x the same setting changes nothing, since the daemon's
// BootstrapParams already settle on v3.
func TestCompatBootstrapOptIn(t *testing.T) {
	if harness.Runtime() != harness.DefaultRuntime {
		t.Skipf("the opt-in is %s's, not %s's", harness.DefaultRuntime, harness.Runtime())
	}
	for _, flavor := range []string{compatOld, harness.Flavor2x} {
		t.Run("containerd-"+flavor, func(t *testing.T) {
			d := harness.StartDaemon(t, flavor, harness.WithShimEnv("EXAMPLE_SHIM_TASK_API=3"))
			ctx, ns := d.NewNamespace(t)
			ctx, cancel := context.WithTimeout(ctx, time.Minute)
			defer cancel()
			ctrOK(t, ctx, d, ctrRun(d, "-d", harness.ImageName, "opt", "sleep", "100000")...)
			if v := bootstrapVersionOf(t, d, ns, "opt"); v != 3 {
				t.Errorf("bootstrap.json version %d, want 3", v)
			}
			if out := ctrOK(t, ctx, d, "task", "exec", "--fifo-dir", d.FIFODir, "--exec-id", "x", "opt", "echo", "v3"); out != "v3\n" {
				t.Errorf("exec output %q", out)
			}
			ctrOK(t, ctx, d, "task", "kill", "-s", "SIGKILL", "opt")
			waitTaskStatus(t, ctx, d, "opt", "STOPPED", 10*time.Second)
			ctrOK(t, ctx, d, "task", "delete", "opt")
			ctrOK(t, ctx, d, "container", "delete", "opt")
			expectNoLeftovers(t, d, ns, "opt")
		})
	}
}
