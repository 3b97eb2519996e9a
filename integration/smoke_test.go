package integration

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	apievents "github.com/containerd/containerd/api/events"
	"github.com/containerd/containerd/v2/pkg/cio"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/example/containerd-shim-example-v2/integration/harness"
)

// smokeFlavors are the containerd release lines TestCompatSmoke runs under:
// $TEST_SMOKE_FLAVORS (space or comma separated; "none" for none), default every line of
// harness.SmokeFlavors. Each needs its release built by `scripts/deps.sh` (make deps).
func smokeFlavors() []string {
	if os.Getenv("TEST_SMOKE_FLAVORS") == "none" {
		return nil
	}
	return harness.FlavorsFromEnv("TEST_SMOKE_FLAVORS", harness.SmokeFlavors)
}

// Compatibility smoke set: the calls every caller makes, under each containerd release line
// that is not run in full (1.7, 2.0, 2.1, 2.2, 2.3; `make matrix`). One CRI-enabled daemon
// per line: `ctr run --rm` with both streams and exit code 3; the Go client's task with
// events in order (create, start, exit, delete) and Wait's status; exit codes 0, 1, 127 and
// 255; exec (output, exit code 5); SIGKILL (137); a CRI pod with an app container (exit code
// and log) and ExecSync; and the task API version the release settled on with the shim
// (bootstrap.json: 3 from 2.3 on, where containerd sends BootstrapParams; 2 before).
func TestCompatSmoke(t *testing.T) {
	flavors := smokeFlavors()
	if len(flavors) == 0 {
		t.Skip("no release line asked for (TEST_SMOKE_FLAVORS=none)")
	}
	for _, flavor := range flavors {
		t.Run("containerd-"+flavor, func(t *testing.T) {
			d, cri := harness.StartCRIDaemon(t, flavor)
			ctx, ns := d.NewNamespace(t)
			ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
			defer cancel()

			t.Run("ctr-run", func(t *testing.T) {
				stdout, stderr, code, err := d.Ctr(ctx, ctrRun(d, "--rm", harness.ImageName, "sm-run",
					"sh", "-c", "echo out; echo err >&2; exit 3")...)
				if err != nil || code != 3 || stdout != "out\n" || withoutCtrLog(stderr) != "err\n" {
					t.Errorf("ctr run --rm: code %d err %v stdout %q stderr %q, want 3, out, err", code, err, stdout, stderr)
				}
				expectNoLeftovers(t, d, ns, "sm-run")
			})

			t.Run("events-and-exit-codes", func(t *testing.T) {
				events := subscribeTaskEvents(t, ctx, d, ns)
				for i, c := range []struct {
					script string
					want   uint32
				}{{"exit 0", 0}, {"exit 1", 1}, {"no-such-command", 127}, {"exit 255", 255}} {
					id := "sm-code" + string(rune('a'+i))
					task, statusC := startTask(t, ctx, newContainer(t, ctx, d, id, []string{"sh", "-c", c.script}), cio.NullIO)
					if got := exitCode(t, ctx, statusC); got != c.want {
						t.Errorf("%q: Wait says %d, want %d", c.script, got, c.want)
					}
					if _, err := task.Delete(ctx); err != nil {
						t.Errorf("%q: delete: %v", c.script, err)
					}
					got := events.collect(t, 10*time.Second, "/tasks/delete of "+id, func(e taskEvent) bool {
						del, ok := e.Event.(*apievents.TaskDelete)
						return ok && del.ContainerID == id
					})
					var order []string
					for _, e := range got {
						order = append(order, e.Topic)
						if ex, ok := e.Event.(*apievents.TaskExit); ok && ex.ExitStatus != c.want {
							t.Errorf("%q: /tasks/exit says %d, want %d", c.script, ex.ExitStatus, c.want)
						}
					}
					if want := []string{"/tasks/create", "/tasks/start", "/tasks/exit", "/tasks/delete"}; !slices.Equal(order, want) {
						t.Errorf("%q: events %v, want %v", c.script, order, want)
					}
				}
			})

			t.Run("exec-and-kill", func(t *testing.T) {
				task, statusC := startTask(t, ctx, newContainer(t, ctx, d, "sm-exec", loopArgs), cio.NullIO)
				out := ctrOK(t, ctx, d, "task", "exec", "--fifo-dir", d.FIFODir, "--exec-id", "e1", "sm-exec", "sh", "-c", "echo from-exec")
				if out != "from-exec\n" {
					t.Errorf("exec output %q, want %q", out, "from-exec\n")
				}
				if code := runExec(t, ctx, task, "e2", "sh", "-c", "exit 5"); code != 5 {
					t.Errorf("exec exit code %d, want 5", code)
				}
				if err := task.Kill(ctx, syscall.SIGKILL); err != nil {
					t.Fatalf("kill: %v", err)
				}
				if code := exitCode(t, ctx, statusC); code != 137 {
					t.Errorf("SIGKILLed init: exit code %d, want 137", code)
				}
				if _, err := task.Delete(ctx); err != nil {
					t.Errorf("delete: %v", err)
				}
				expectNoLeftovers(t, d, ns, "sm-exec")
			})

			t.Run("bootstrap-version", func(t *testing.T) {
				ctrOK(t, ctx, d, ctrRun(d, "-d", harness.ImageName, "sm-boot", "sleep", "100000")...)
				want := 2
				if harness.FlavorAtLeast(flavor, "2.3") {
					want = 3
				}
				raw, err := os.ReadFile(filepath.Join(d.BundleDir(ns, "sm-boot"), "bootstrap.json"))
				switch {
				case err != nil && os.IsNotExist(err) && !d.Is2x():
					// 1.x keeps the address in memory and in the bundle's address file only.
				case err != nil:
					t.Errorf("bootstrap.json: %v", err)
				default:
					var b struct {
						Version int `json:"version"`
					}
					if err := json.Unmarshal(raw, &b); err != nil || b.Version != want {
						t.Errorf("bootstrap.json %s: version %d (%v), want %d", raw, b.Version, err, want)
					}
				}
				ctrOK(t, ctx, d, "task", "kill", "-s", "SIGKILL", "sm-boot")
				waitTaskStatus(t, ctx, d, "sm-boot", "STOPPED", 10*time.Second)
				ctrOK(t, ctx, d, "task", "delete", "sm-boot")
				ctrOK(t, ctx, d, "container", "delete", "sm-boot")
			})

			t.Run("cri-pod", func(t *testing.T) {
				pod := runCRIPod(t, ctx, d, cri, "smoke-"+harness.RandID(6))
				runCRIAppToExit(t, ctx, cri, pod, "app", "echo smoke; sleep 0.3; echo oops >&2; exit 3", 3, []string{"stdout smoke", "stderr oops"})
				id := createCRIContainer(t, ctx, cri, pod, "runner", loopArgs, nil)
				startCRIContainer(t, ctx, cri, id, "runner")
				waitCRIState(t, ctx, cri, id, "runner", runtimeapi.ContainerState_CONTAINER_RUNNING, 10*time.Second)
				r, err := cri.Runtime.ExecSync(ctx, &runtimeapi.ExecSyncRequest{ContainerId: id, Cmd: []string{"sh", "-c", "echo synced; exit 6"}, Timeout: 10})
				if err != nil || r.ExitCode != 6 || strings.TrimSpace(string(r.Stdout)) != "synced" {
					t.Errorf("ExecSync: %v, exit code %d stdout %q, want 6 and synced", err, r.GetExitCode(), r.GetStdout())
				}
				if shims := d.ShimProcesses(harness.CRINamespace, ""); len(shims) != 1 {
					t.Errorf("shim processes for the pod: %v, want one", shims)
				}
				if _, err := cri.Runtime.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: pod.id}); err != nil {
					t.Errorf("StopPodSandbox: %v", err)
				}
				if _, err := cri.Runtime.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: pod.id}); err != nil {
					t.Errorf("RemovePodSandbox: %v", err)
				}
			})
		})
	}
}

// withoutCtrLog drops ctr's own log lines (logfmt with a level=, such as 2.2's cgroup v1
// deprecation warning) from its stderr, leaving what the container wrote.
func withoutCtrLog(stderr string) string {
	var b strings.Builder
	for _, line := range strings.SplitAfter(stderr, "\n") {
		if !strings.Contains(line, " level=") {
			b.WriteString(line)
		}
	}
	return b.String()
}
