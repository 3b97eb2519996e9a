package integration

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/containerd/api/types/runc/options"
	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/cio"

	"github.com/example/containerd-shim-example-v2/integration/harness"
)

// failPrompt bounds how long a call whose runtime invocation fails may take to fail.
const failPrompt = 10 * time.Second

// faultyRuntime is a runtime wrapper: it execs /usr/sbin/runc unless <dir>/fail-<subcommand>
// exists. Then it fails (exit 1) with "injected failure of runc <subcommand>" on stderr and,
// like runc, as an error line in its --log file; if the trigger file holds "after", it runs
// runc first and fails afterwards (runc did the work, the caller is told it failed), noting
// the pid runc wrote to --pid-file in <dir>/created-pid. Every call is logged in <dir>/calls,
// every injected failure in <dir>/failed.
func faultyRuntime(dir string) string {
	return `dir=` + shellQuote(dir) + `
sub= log= pidfile= skip= prev=
for a in "$@"; do
  if [ "$prev" = --pid-file ]; then pidfile=$a; fi
  prev=$a
  if [ -n "$skip" ]; then
    if [ "$skip" = log ]; then log=$a; fi
    skip=; continue
  fi
  if [ -n "$sub" ]; then continue; fi
  case "$a" in
    --log) skip=log ;;
    --log=*) log=${a#--log=} ;;
    --root|--log-format|--criu|--rootless) skip=1 ;;
    -*) ;;
    *) sub=$a ;;
  esac
done
echo "$*" >> "$dir/calls"
trigger="$dir/fail-$sub"
if [ -n "$sub" ] && [ -e "$trigger" ]; then
  if [ "$(cat "$trigger")" = after ]; then
    /usr/sbin/runc "$@" || exit $?
    if [ -n "$pidfile" ]; then cat "$pidfile" > "$dir/created-pid"; fi
  fi
  msg="injected failure of runc $sub"
  echo "$sub" >> "$dir/failed"
  if [ -n "$log" ]; then printf '{"level":"error","msg":"%s","time":"2026-01-01T00:00:00Z"}\n' "$msg" >> "$log"; fi
  echo "$msg" >&2
  exit 1
fi
exec /usr/sbin/runc "$@"
`
}

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// Reliability 5: runtime failures. Containers of one group (one shim) use a faulty runtime
// wrapper (BinaryName); the test makes runc create (before and after doing its work),
// start, exec and kill fail in turn. Each failure must come back as an error, promptly,
// that says what failed; it must leave nothing of that container behind (no process,
// mount, runc state, bundle); and the shim must go on serving the group's other container
// (rf-keep, plain runc) throughout.
func TestRuntimeFailures(t *testing.T) {
	forEachFlavor(t, func(t *testing.T, d *harness.Daemon) {
		ctx, ns := d.NewNamespace(t)
		ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		defer cancel()
		dir := t.TempDir()
		wrapper := filepath.Join(dir, "faulty-runc")
		writeScript(t, wrapper, faultyRuntime(dir))
		viaWrapper := withRuncOptions(&options.Options{BinaryName: wrapper})
		group := "rtfail-" + harness.RandID(8)
		trigger := func(sub, mode string) {
			t.Helper()
			if err := os.WriteFile(filepath.Join(dir, "fail-"+sub), []byte(mode), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		clear := func(sub string) { os.Remove(filepath.Join(dir, "fail-"+sub)) }
		injected := func(sub string) bool {
			data, _ := os.ReadFile(filepath.Join(dir, "failed"))
			for _, l := range strings.Fields(string(data)) {
				if l == sub {
					return true
				}
			}
			return false
		}
		resetInjected := func() { os.Remove(filepath.Join(dir, "failed")) }

		keep := newContainer(t, ctx, d, "rf-keep", loopArgs, groupAnnotation(group))
		keepTask, _ := startTask(t, ctx, keep, cio.NullIO)
		shim := shimPidFor(t, d, ns, "rf-keep", "rf-keep")
		faults := 0
		stillServing := func(after string) {
			t.Helper()
			if !harness.PidExists(shim) {
				t.Fatalf("shim %d died after %s", shim, after)
			}
			faults++
			if code := runExecTimed(t, ctx, keepTask, "keep-"+strconv.Itoa(faults), failPrompt, "sh", "-c", "exit 3"); code != 3 {
				t.Errorf("exec in rf-keep after %s: exit code %d, want 3", after, code)
			}
			expectRunning(t, ctx, keepTask, "after "+after)
		}
		expectClear := func(what string, err error, took time.Duration, sub string) {
			t.Helper()
			if err == nil {
				t.Errorf("%s: succeeded although runc %s failed", what, sub)
				return
			}
			t.Logf("%s: %v (%s, after %v)", what, err, errCode(err), took.Round(time.Millisecond))
			if took > failPrompt {
				t.Errorf("%s: failed only after %v (want < %v)", what, took.Round(time.Millisecond), failPrompt)
			}
			if !strings.Contains(err.Error(), "injected failure of runc "+sub) {
				t.Errorf("%s: error %q does not carry the runtime's message %q", what, err, "injected failure of runc "+sub)
			}
		}

		// create fails before runc does anything, then after runc created the container.
		for _, mode := range []string{"before", "after"} {
			id := "rf-create-" + mode
			trigger("create", mode)
			os.Remove(filepath.Join(dir, "created-pid"))
			ctr := newContainer(t, ctx, d, id, []string{"true"}, groupAnnotation(group))
			start := time.Now()
			cctx, ccancel := context.WithTimeout(ctx, errorTimeout)
			task, err := ctr.NewTask(cctx, cio.NullIO, viaWrapper)
			ccancel()
			clear("create")
			if err == nil {
				task.Delete(ctx, containerd.WithProcessKill)
			}
			expectClear("NewTask, create failing "+mode, err, time.Since(start), "create")
			if !injected("create") {
				t.Errorf("%s: the wrapper was not asked to create (calls: %s)", id, readFile(filepath.Join(dir, "calls")))
			}
			if mode == "after" {
				pid, _ := strconv.Atoi(strings.TrimSpace(readFile(filepath.Join(dir, "created-pid"))))
				if pid <= 0 {
					t.Errorf("%s: runc wrote no pid (calls: %s)", id, readFile(filepath.Join(dir, "calls")))
				} else if !eventually(5*time.Second, func() bool { return !harness.PidExists(pid) }) {
					t.Errorf("%s: the container's process %d (runc init, created before the reported failure) is left running", id, pid)
				}
			}
			resetInjected()
			expectNoLeftovers(t, d, ns, id)
			stillServing("a failed create (" + mode + ")")
		}

		// start fails: the created task is deleted by the client, as ctr and CRI do.
		{
			const id = "rf-start"
			ctr := newContainer(t, ctx, d, id, loopArgs, groupAnnotation(group))
			task, err := ctr.NewTask(ctx, cio.NullIO, viaWrapper)
			if err != nil {
				t.Fatalf("new task %s: %v", id, err)
			}
			pid := int(task.Pid())
			trigger("start", "before")
			start := time.Now()
			sctx, scancel := context.WithTimeout(ctx, errorTimeout)
			err = task.Start(sctx)
			scancel()
			clear("start")
			expectClear("Start, start failing", err, time.Since(start), "start")
			resetInjected()
			dctx, dcancel := context.WithTimeout(ctx, failPrompt)
			_, derr := task.Delete(dctx, containerd.WithProcessKill)
			dcancel()
			if derr != nil {
				t.Errorf("delete of %s after its start failed: %v", id, derr)
			}
			if !eventually(5*time.Second, func() bool { return !harness.PidExists(pid) }) {
				t.Errorf("%s: process %d left after the failed start and delete", id, pid)
			}
			expectNoLeftovers(t, d, ns, id)
			stillServing("a failed start")
		}

		// exec and kill fail on a running container of the wrapper.
		const id = "rf-run"
		// An init without children, so that Pids shows exactly what the failed exec left.
		ctr := newContainer(t, ctx, d, id, []string{"sleep", "1000000"}, groupAnnotation(group))
		task, statusC := startTask(t, ctx, ctr, cio.NullIO, viaWrapper)
		{
			trigger("exec", "before")
			start := time.Now()
			ectx, ecancel := context.WithTimeout(ctx, errorTimeout)
			proc, err := task.Exec(ectx, "e1", execSpec(t, ctx, task, "sleep", "1000"), cio.NullIO)
			if err == nil {
				err = proc.Start(ectx)
			}
			ecancel()
			clear("exec")
			expectClear("exec, exec failing", err, time.Since(start), "exec")
			if proc != nil {
				if _, derr := proc.Delete(ctx, containerd.WithProcessKill); derr != nil {
					t.Errorf("delete of the failed exec: %v", derr)
				}
			}
			resetInjected()
			if pids, err := task.Pids(ctx); err != nil || len(pids) != 1 {
				t.Errorf("%s after the failed exec: pids %v (err %v), want only the init", id, pids, err)
			}
			expectRunning(t, ctx, task, "after a failed exec")
			if code := runExecTimed(t, ctx, task, "e2", failPrompt, "sh", "-c", "exit 5"); code != 5 {
				t.Errorf("exec in %s once runc exec works again: exit code %d, want 5", id, code)
			}
			stillServing("a failed exec")
		}
		{
			trigger("kill", "before")
			start := time.Now()
			kctx, kcancel := context.WithTimeout(ctx, errorTimeout)
			err := task.Kill(kctx, syscall.SIGKILL)
			kcancel()
			clear("kill")
			if injected("kill") {
				expectClear("Kill, kill failing", err, time.Since(start), "kill")
				time.Sleep(300 * time.Millisecond)
				expectRunning(t, ctx, task, "after a failed kill")
				if err := task.Kill(ctx, syscall.SIGKILL); err != nil {
					t.Errorf("kill once runc kill works again: %v", err)
				}
			} else {
				t.Logf("Kill did not call runc kill (the shim signals the init itself): no fault injected; Kill: %v", err)
			}
			resetInjected()
			if code := exitCodeWithin(t, ctx, statusC, failPrompt); code != 137 {
				t.Errorf("%s: exit code %d after SIGKILL, want 137", id, code)
			}
			if _, err := task.Delete(ctx); err != nil {
				t.Errorf("delete %s: %v", id, err)
			}
			expectNoLeftovers(t, d, ns, id)
			stillServing("a failed kill")
		}
		t.Logf("%d runtime faults injected; calls to the wrapper:\n%s", faults, readFile(filepath.Join(dir, "calls")))
	})
}

func readFile(p string) string {
	data, _ := os.ReadFile(p)
	return string(data)
}
