package integration

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/oci"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/example/containerd-shim-example-v2/integration/harness"
)

// Scenario 1: `ctr run --rm` passes stdout and stderr through and exits with the
// container's exit code; nothing is left afterwards.
func TestRunStreamsAndExitCode(t *testing.T) {
	forEachFlavor(t, func(t *testing.T, d *harness.Daemon) {
		ctx, ns := d.NewNamespace(t)
		ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()

		stdout, stderr, code, err := d.Ctr(ctx, ctrRun(d, "--rm", harness.ImageName, "t1",
			"sh", "-c", "echo hi; echo err >&2; exit 3")...)
		if err != nil {
			t.Fatalf("ctr run: %v (stderr %q)", err, stderr)
		}
		if stdout != "hi\n" {
			t.Errorf("stdout = %q, want %q", stdout, "hi\n")
		}
		if !strings.Contains(stderr, "err") {
			t.Errorf("stderr = %q, want it to contain %q", stderr, "err")
		}
		if code != 3 {
			t.Errorf("ctr run exit code = %d, want 3 (stderr %q)", code, stderr)
		}
		if out := ctrOK(t, ctx, d, "containers", "ls", "-q"); strings.TrimSpace(out) != "" {
			t.Errorf("containers left after run --rm: %q", out)
		}
		expectNoLeftovers(t, d, ns, "t1")
	})
}

// Scenario 2a: a detached long runner is listed RUNNING with a real host PID, shows in
// `ctr task ps`, and SIGKILL makes it exit with 137.
func TestKillRunningTask(t *testing.T) {
	forEachFlavor(t, func(t *testing.T, d *harness.Daemon) {
		ctx, ns := d.NewNamespace(t)
		ctx, cancel := context.WithTimeout(ctx, 45*time.Second)
		defer cancel()
		const id = "t2"

		ctrOK(t, ctx, d, ctrRun(d, append([]string{"-d", harness.ImageName, id}, loopArgs...)...)...)
		row := waitTaskStatus(t, ctx, d, id, "RUNNING", 10*time.Second)
		if !harness.PidExists(row.Pid) {
			t.Fatalf("ctr task ls says pid %d, which does not exist on the host", row.Pid)
		}
		cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", row.Pid))
		if !strings.Contains(string(cmdline), "while") {
			t.Errorf("pid %d runs %q, not the container's shell", row.Pid, strings.ReplaceAll(string(cmdline), "\x00", " "))
		}

		// The leak checks must be able to see a live task, or they would pass vacuously.
		if left := d.Leftovers(ns, id); len(left) == 0 {
			t.Errorf("leak check sees nothing of running task %s: shim process, rootfs mount and bundle expected", id)
		}

		if out := ctrOK(t, ctx, d, "task", "ps", id); !psListsPid(out, row.Pid) {
			t.Errorf("ctr task ps does not list init pid %d:\n%s", row.Pid, out)
		}

		ctrOK(t, ctx, d, "task", "kill", "-s", "SIGKILL", id)
		waitTaskStatus(t, ctx, d, id, "STOPPED", 15*time.Second)
		if st := clientStatus(t, ctx, d, id); st.ExitStatus != 137 {
			t.Errorf("exit status after SIGKILL = %d, want 137", st.ExitStatus)
		}
		if harness.PidExists(row.Pid) {
			t.Errorf("pid %d still exists after the task stopped", row.Pid)
		}
		_, stderr, code, err := d.Ctr(ctx, "task", "rm", id)
		if err != nil || code != 0 {
			t.Fatalf("ctr task rm: code %d err %v stderr %q", code, err, stderr)
		}
		// Both ctr versions warn "task t2 exit with non-zero exit code 137".
		if !strings.Contains(stderr, "exit code 137") {
			t.Errorf("ctr task rm stderr %q does not mention exit code 137", stderr)
		}
		ctrOK(t, ctx, d, "containers", "rm", id)
		expectNoLeftovers(t, d, ns, id)
	})
}

// Scenario 2b: SIGTERM to an init that traps it with `exit 7` gives exit status 7.
//
// A note on 143 (128+SIGTERM): an init that is PID 1 of its PID namespace can never be
// terminated by SIGTERM. The kernel delivers signals from the parent namespace to such an
// init only when it installed a handler (SIGKILL/SIGSTOP excepted), and a handler cannot
// re-raise the signal with the default action either (init is SIGNAL_UNKILLABLE). So 143 is
// checked in TestSigtermExitStatus143 on an init without a PID namespace and on an exec.
func TestSigtermTrappedByInit(t *testing.T) {
	forEachFlavor(t, func(t *testing.T, d *harness.Daemon) {
		ctx, ns := d.NewNamespace(t)
		ctx, cancel := context.WithTimeout(ctx, 45*time.Second)
		defer cancel()
		const id = "t3"

		ctrOK(t, ctx, d, ctrRun(d, "-d", harness.ImageName, id,
			"sh", "-c", `trap "exit 7" TERM; while :; do sleep 0.2; done`)...)
		row := waitTaskStatus(t, ctx, d, id, "RUNNING", 10*time.Second)
		// Until the shell has installed its trap, PID 1 would ignore SIGTERM: wait for it.
		waitSignalCaught(t, row.Pid, "sh", syscall.SIGTERM, 10*time.Second)

		ctrOK(t, ctx, d, "task", "kill", "-s", "SIGTERM", id)
		waitTaskStatus(t, ctx, d, id, "STOPPED", 15*time.Second)
		if st := clientStatus(t, ctx, d, id); st.ExitStatus != 7 {
			t.Errorf("exit status after trapped SIGTERM = %d, want 7", st.ExitStatus)
		}
		ctrOK(t, ctx, d, "task", "rm", id)
		ctrOK(t, ctx, d, "containers", "rm", id)
		expectNoLeftovers(t, d, ns, id)
	})
}

// Scenario 2c: a process without a SIGTERM handler that is not a PID-namespace init dies by
// SIGTERM and is reported with status 143: an init sharing the host PID namespace, and an
// exec process inside an ordinary container.
func TestSigtermExitStatus143(t *testing.T) {
	forEachFlavor(t, func(t *testing.T, d *harness.Daemon) {
		t.Run("init-host-pidns", func(t *testing.T) {
			ctx, ns := d.NewNamespace(t)
			ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			ctr := newContainer(t, ctx, d, "t4", []string{"sleep", "1000"}, oci.WithHostNamespace(specs.PIDNamespace))
			task, statusC := startTask(t, ctx, ctr, cio.NullIO)
			if err := task.Kill(ctx, syscall.SIGTERM); err != nil {
				t.Fatalf("kill: %v", err)
			}
			if code := exitCode(t, ctx, statusC); code != 143 {
				t.Errorf("init without pid namespace: exit status after SIGTERM = %d, want 143", code)
			}
			if _, err := task.Delete(ctx); err != nil {
				t.Fatalf("delete: %v", err)
			}
			expectNoLeftovers(t, d, ns, "t4")
		})
		t.Run("exec", func(t *testing.T) {
			ctx, _ := d.NewNamespace(t)
			ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			ctr := newContainer(t, ctx, d, "t5", []string{"sh", "-c", `trap "exit 0" TERM; while :; do sleep 0.2; done`})
			task, _ := startTask(t, ctx, ctr, cio.NullIO)
			proc, err := task.Exec(ctx, "e1", execSpec(t, ctx, task, "sleep", "1000"), cio.NullIO)
			if err != nil {
				t.Fatalf("exec: %v", err)
			}
			statusC := startProc(t, ctx, "exec e1", proc)
			if err := proc.Kill(ctx, syscall.SIGTERM); err != nil {
				t.Fatalf("exec kill: %v", err)
			}
			if code := exitCode(t, ctx, statusC); code != 143 {
				t.Errorf("exec: exit status after SIGTERM = %d, want 143", code)
			}
			if _, err := proc.Delete(ctx); err != nil {
				t.Errorf("exec delete: %v", err)
			}
			// The init is still running and is removed by the namespace cleanup.
			if st, err := task.Status(ctx); err != nil || st.Status != containerd.Running {
				t.Errorf("init after exec was killed: status %v err %v, want running", st.Status, err)
			}
		})
	})
}

// psListsPid reports whether `ctr task ps` output lists pid in its first column.
func psListsPid(out string, pid int) bool {
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) > 0 && f[0] == strconv.Itoa(pid) {
			return true
		}
	}
	return false
}

// clientStatus loads the task through the Go client and returns its status.
func clientStatus(t *testing.T, ctx context.Context, d *harness.Daemon, id string) containerd.Status {
	t.Helper()
	ctr, err := d.Client().LoadContainer(ctx, id)
	if err != nil {
		t.Fatalf("load container %s: %v", id, err)
	}
	task, err := ctr.Task(ctx, nil)
	if err != nil {
		t.Fatalf("load task %s: %v", id, err)
	}
	st, err := task.Status(ctx)
	if err != nil {
		t.Fatalf("task %s status: %v", id, err)
	}
	return st
}

// exitCode waits for an exit status from a Wait channel, failing the test if ctx ends first.
func exitCode(t *testing.T, ctx context.Context, statusC <-chan containerd.ExitStatus) uint32 {
	t.Helper()
	select {
	case st := <-statusC:
		code, _, err := st.Result()
		if err != nil {
			t.Fatalf("wait result: %v", err)
		}
		return code
	case <-ctx.Done():
		t.Fatalf("process did not exit: %v", ctx.Err())
	}
	return 0
}

// waitSignalCaught polls /proc/<pid>/status until the process runs the program named name
// (its comm) and has a handler for sig. The name matters: a task reads as running once the
// runtime's start has returned, and its PID 1 may still be the runtime's init (runc's is a
// Go program, "runc:[2:INIT]", with a handler for every signal) just before it executes the
// container's program. A SIGTERM sent then ends that init with Go's fallback status 2 (the
// signal cannot kill a PID-namespace init), not the trap's.
func waitSignalCaught(t *testing.T, pid int, name string, sig syscall.Signal, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		if err != nil {
			t.Fatalf("read status of pid %d: %v", pid, err)
		}
		named, caught := false, false
		for _, line := range strings.Split(string(data), "\n") {
			if v, ok := strings.CutPrefix(line, "Name:"); ok {
				named = strings.TrimSpace(v) == name
			}
			if v, ok := strings.CutPrefix(line, "SigCgt:"); ok {
				mask, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
				caught = err == nil && mask&(1<<(uint(sig)-1)) != 0
			}
		}
		if named && caught {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("pid %d (%s) installed no handler for %v within %v", pid, name, sig, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
