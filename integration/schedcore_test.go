package integration

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/containerd/containerd/v2/pkg/cio"
	"golang.org/x/sys/unix"

	"github.com/example/containerd-shim-example-v2/integration/harness"
)

// coreCookie returns pid's core-scheduling cookie (PR_SCHED_CORE_GET, PIDTYPE_PID).
func coreCookie(pid int) (uint64, error) {
	var cookie uint64
	err := unix.Prctl(unix.PR_SCHED_CORE, unix.PR_SCHED_CORE_GET, uintptr(pid), 0, uintptr(unsafe.Pointer(&cookie)))
	return cookie, err
}

// containerd's sched_core (1.6: `sched_core = true`; 2.x: SCHED_CORE in the shims'
// environment) asks each shim for a core-scheduling cookie of its own, shared by its
// containers. Where the kernel has core scheduling, the shim and its container carry the
// same non-zero cookie; where it has not (this machine's kernel), the task's creation fails
// with an error that says so, and nothing is left behind.
func TestSchedCore(t *testing.T) {
	_, probeErr := coreCookie(0)
	supported := probeErr == nil
	for _, flavor := range harness.AllFlavors {
		t.Run("containerd-"+flavor, func(t *testing.T) {
			opt := harness.WithSchedCore()
			if harness.FlavorMajor(flavor) == 2 {
				opt = harness.WithShimEnv("SCHED_CORE=1")
			}
			d := harness.StartDaemon(t, flavor, opt)
			ctx, ns := d.NewNamespace(t)
			ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			const id = "sc1"
			ctr := newContainer(t, ctx, d, id, loopArgs)
			task, err := ctr.NewTask(ctx, cio.NullIO)
			if !supported {
				t.Logf("kernel without core scheduling (%v): creation must fail", probeErr)
				if err == nil {
					t.Fatalf("NewTask with SCHED_CORE succeeded on a kernel without core scheduling")
				}
				if !strings.Contains(err.Error(), "SCHED_CORE") && harness.Runtime() == "io.example.v2" {
					t.Errorf("NewTask with SCHED_CORE: %v; want the error to name SCHED_CORE", err)
				}
				expectNoLeftovers(t, d, ns, id)
				return
			}
			if err != nil {
				t.Fatalf("NewTask with SCHED_CORE: %v", err)
			}
			if err := task.Start(ctx); err != nil {
				t.Fatal(err)
			}
			shim := onlyShim(t, d, ns, id)
			shimCookie, err1 := coreCookie(shim.Pid)
			ctrCookie, err2 := coreCookie(int(task.Pid()))
			if err := errors.Join(err1, err2); err != nil || shimCookie == 0 || shimCookie != ctrCookie {
				t.Errorf("core cookies: shim %d %#x, container %d %#x (%v); want one non-zero cookie", shim.Pid, shimCookie, task.Pid(), ctrCookie, err)
			}
		})
	}
}
