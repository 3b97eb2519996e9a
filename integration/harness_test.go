package integration

import (
	"context"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/pkg/namespaces"

	"github.com/example/containerd-shim-example-v2/integration/harness"
)

// TestHarnessTeardown checks the harness itself: a daemon that dies with a container still
// running (the worst case after a failed test) is torn down completely by Stop: no shim,
// no container process, no runc state, no mounts, no directory.
func TestHarnessTeardown(t *testing.T) {
	for _, flavor := range harness.AllFlavors {
		t.Run("containerd-"+flavor, func(t *testing.T) {
			d := harness.StartDaemon(t, flavor) // its t.Cleanup calls Stop again: must be a no-op
			ns := "ex-" + harness.RandID(10)
			d.TrackNamespace(ns)
			ctx, cancel := context.WithTimeout(namespaces.WithNamespace(context.Background(), ns), 60*time.Second)
			defer cancel()
			if _, err := harness.ImportImage(ctx, d.Client(), ""); err != nil {
				t.Fatalf("import: %v", err)
			}
			const id = "td1"
			if _, stderr, code, err := d.Ctr(ctx, ctrRun(d, "-d", harness.ImageName, id,
				"sh", "-c", "while :; do sleep 0.2; done")...); err != nil || code != 0 {
				t.Fatalf("ctr run -d: code %d err %v stderr %q", code, err, stderr)
			}
			row := waitTaskStatus(t, ctx, d, id, "RUNNING", 10*time.Second)
			if len(d.ShimProcesses(ns, "")) == 0 {
				t.Fatalf("harness finds no shim process for the running task")
			}
			mounted := len(harness.MountsUnder(d.State)) > 0
			if d.OwnMountNamespace() {
				mounted = len(d.MountNamespaceMounts(d.State)) > 0
			}
			if !mounted {
				t.Fatalf("harness finds no rootfs mount under %s for the running task", d.State)
			}

			// The daemon dies: nothing can be cleaned through the API any more.
			if err := syscall.Kill(d.Pid(), syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			for deadline := time.Now().Add(10 * time.Second); !d.Exited(); {
				if time.Now().After(deadline) {
					t.Fatal("containerd did not die on SIGKILL")
				}
				time.Sleep(20 * time.Millisecond)
			}
			if err := d.Stop(); err != nil {
				t.Errorf("Stop: %v", err)
			}
			if p := d.ShimProcesses("", ""); len(p) > 0 {
				t.Errorf("shims left after Stop: %v", p)
			}
			for deadline := time.Now().Add(5 * time.Second); harness.PidExists(row.Pid); time.Sleep(20 * time.Millisecond) {
				if time.Now().After(deadline) {
					t.Errorf("container init pid %d left 5 s after Stop", row.Pid)
					break
				}
			}
			if _, err := os.Stat(harness.RuncStateDir(ns, id)); err == nil {
				t.Errorf("runc state %s left after Stop", harness.RuncStateDir(ns, id))
			}
			for _, h := range harness.CgroupHierarchies() {
				if _, err := os.Stat(filepath.Join(h, ns)); err == nil {
					t.Errorf("cgroup %s/%s left after Stop", h, ns)
				}
			}
			if m := harness.MountsUnder(d.Base); len(m) > 0 {
				t.Errorf("mounts left after Stop: %v", m)
			}
			if _, err := os.Stat(d.Base); !os.IsNotExist(err) {
				t.Errorf("daemon dir %s left after Stop (%v)", d.Base, err)
			}
		})
	}
}
