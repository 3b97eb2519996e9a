package integration

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/containerd/containerd/api/types/runc/options"
	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/example/containerd-shim-example-v2/integration/harness"
)

// withRuncOptions sets the task's runtime options (containerd.runc.v1.Options, the type
// containerd 2.x requires of task options whatever the runtime).
func withRuncOptions(o *options.Options) containerd.NewTaskOpts {
	return func(_ context.Context, _ *containerd.Client, ti *containerd.TaskInfo) error {
		ti.Options = o
		return nil
	}
}

// bufferedIO returns an IO creator whose FIFOs live in the daemon's dir and whose stdout
// and stderr go to the returned buffers.
func bufferedIO(d *harness.Daemon) (cio.Creator, *lockedBuffer, *lockedBuffer) {
	var out, errb lockedBuffer
	return cio.NewCreator(cio.WithStreams(nil, &out, &errb), cio.WithFIFODir(d.FIFODir)), &out, &errb
}

// Options 1: BinaryName naming a runtime that does not exist fails task creation with
// InvalidArgument, and nothing of the task is left.
func TestOptionsBinaryNameMissing(t *testing.T) {
	forEachFlavor(t, func(t *testing.T, d *harness.Daemon) {
		ctx, ns := d.NewNamespace(t)
		ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		const id = "o1"
		ctr := newContainer(t, ctx, d, id, []string{"true"})
		task, err := ctr.NewTask(ctx, cio.NullIO, withRuncOptions(&options.Options{BinaryName: "/nonexistent/runc"}))
		if err == nil {
			task.Delete(ctx, containerd.WithProcessKill)
			t.Fatalf("NewTask with BinaryName /nonexistent/runc succeeded")
		}
		if !errdefs.IsInvalidArgument(err) {
			t.Errorf("NewTask with BinaryName /nonexistent/runc: %v, want an InvalidArgument error", err)
		}
		if !strings.Contains(err.Error(), "/nonexistent/runc") {
			t.Errorf("error %q does not name the missing binary", err)
		}
		expectNoLeftovers(t, d, ns, id)
	})
}

// Options 2: BinaryName is honoured: a wrapper that logs its arguments and execs runc runs
// the container (create, start, delete all through it); NoPivotRoot and NoNewKeyring reach
// the runtime's create as --no-pivot and --no-new-keyring.
func TestOptionsBinaryNameWrapper(t *testing.T) {
	forEachFlavor(t, func(t *testing.T, d *harness.Daemon) {
		ctx, ns := d.NewNamespace(t)
		ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		const id = "o2"
		wrapper, log := loggingRuncWrapper(t, t.TempDir())

		ctr := newContainer(t, ctx, d, id, []string{"sh", "-c", "echo wrapped; exit 4"})
		ioc, out, _ := bufferedIO(d)
		task, statusC := startTask(t, ctx, ctr, ioc, withRuncOptions(&options.Options{BinaryName: wrapper, NoPivotRoot: true, NoNewKeyring: true}))
		if code := exitCode(t, ctx, statusC); code != 4 {
			t.Errorf("exit code %d, want 4", code)
		}
		if _, err := task.Delete(ctx); err != nil {
			t.Fatalf("delete: %v", err)
		}
		if out.String() != "wrapped\n" {
			t.Errorf("stdout %q, want %q", out.String(), "wrapped\n")
		}
		data, _ := os.ReadFile(log)
		for _, verb := range []string{"create", "start", "delete"} {
			if !hasRuntimeCall(string(data), verb, id) {
				t.Errorf("wrapper log has no `%s ... %s` call; BinaryName not used for it. Log:\n%s", verb, id, data)
			}
		}
		for _, line := range strings.Split(string(data), "\n") {
			f := strings.Fields(line)
			if slices.Contains(f, "create") && f[len(f)-1] == id {
				for _, flag := range []string{"--no-pivot", "--no-new-keyring"} {
					if !slices.Contains(f, flag) {
						t.Errorf("runtime create without %s: %s", flag, line)
					}
				}
			}
		}
		expectNoLeftovers(t, d, ns, id)
	})
}

// Options 2b: ctr's own way to give a non-runc runtime its options, `--runtime-config-path`
// (ctr refuses --runc-binary for runtimes other than io.containerd.runc.v2): the shim reads
// the TOML file and runs the container through the BinaryName it names.
func TestOptionsCtrRuntimeConfigPath(t *testing.T) {
	forEachFlavor(t, func(t *testing.T, d *harness.Daemon) {
		ctx, ns := d.NewNamespace(t)
		ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		const id = "o2b"
		dir := t.TempDir()
		wrapper, log := loggingRuncWrapper(t, dir)
		config := filepath.Join(dir, "options.toml")
		if err := os.WriteFile(config, []byte("BinaryName = '"+wrapper+"'\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		stdout, stderr, code, err := d.Ctr(ctx, ctrRun(d, "--rm", "--runtime-config-path", config, harness.ImageName, id,
			"sh", "-c", "echo configured; exit 6")...)
		if err != nil {
			t.Fatalf("ctr run: %v (stderr %q)", err, stderr)
		}
		if code != 6 || stdout != "configured\n" {
			t.Errorf("ctr run: exit code %d, stdout %q; want 6 and %q (stderr %q)", code, stdout, "configured\n", stderr)
		}
		data, _ := os.ReadFile(log)
		for _, verb := range []string{"create", "start", "delete"} {
			if !hasRuntimeCall(string(data), verb, id) {
				t.Errorf("wrapper log has no `%s ... %s` call; the config file's BinaryName was not used. Log:\n%s", verb, id, data)
			}
		}
		expectNoLeftovers(t, d, ns, id)
	})
}

// loggingRuncWrapper writes a runc-compatible binary into dir that appends each call's
// arguments (one call a line) to the returned log and execs runc.
func loggingRuncWrapper(t *testing.T, dir string) (wrapper, log string) {
	t.Helper()
	wrapper, log = filepath.Join(dir, "runc-wrapper"), filepath.Join(dir, "argv.log")
	writeScript(t, wrapper, "echo \"$*\" >> "+log+"\nexec /usr/sbin/runc \"$@\"\n")
	return wrapper, log
}

// hasRuntimeCall reports whether a logged runtime argv (one call a line) contains a call of
// verb whose last argument is the container id.
func hasRuntimeCall(log, verb, id string) bool {
	for _, line := range strings.Split(log, "\n") {
		f := strings.Fields(line)
		if len(f) < 2 || f[len(f)-1] != id {
			continue
		}
		for _, a := range f {
			if a == verb {
				return true
			}
		}
	}
	return false
}

// Options 3: Root puts the runtime's state under <root>/<namespace>/<id> (not the default
// root) while the container runs, and it is gone after the task is deleted.
func TestOptionsRoot(t *testing.T) {
	forEachFlavor(t, func(t *testing.T, d *harness.Daemon) {
		ctx, ns := d.NewNamespace(t)
		ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		const id = "o3"
		root := filepath.Join(t.TempDir(), "runtime-root")
		ctr := newContainer(t, ctx, d, id, loopArgs)
		startTask(t, ctx, ctr, cio.NullIO, withRuncOptions(&options.Options{Root: root}))
		stateFile := "state.json"
		if harness.CrunUnderTest() {
			stateFile = "status" // crun's state file
		}
		state := filepath.Join(root, ns, id, stateFile)
		if _, err := os.Stat(state); err != nil {
			t.Errorf("runtime state under the custom root: %v", err)
		}
		if _, err := os.Stat(harness.RuncStateDir(ns, id)); !os.IsNotExist(err) {
			t.Errorf("runtime state also under the default root %s (%v)", harness.RuncStateDir(ns, id), err)
		}
		if err := harness.DeleteContainer(ctx, ctr); err != nil {
			t.Fatalf("delete: %v", err)
		}
		if _, err := os.Stat(filepath.Join(root, ns, id)); !os.IsNotExist(err) {
			t.Errorf("runtime state %s left after delete (%v)", filepath.Join(root, ns, id), err)
		}
		expectNoLeftovers(t, d, ns, id)
	})
}

// Options 4: BinaryName "crun" runs the container with crun (exit code, output, an exec).
// crun 1.8 refuses this host's hybrid cgroup layout, so the daemon runs in a private mount
// namespace without /sys/fs/cgroup/unified (harness.WithLegacyCgroups); a daemon of its own
// per flavor.
func TestOptionsCrun(t *testing.T) {
	crun := "/usr/bin/crun"
	if _, err := os.Stat(crun); err != nil {
		t.Fatalf("crun needed at %s (scripts/deps.sh installs it): %v", crun, err)
	}
	for _, flavor := range harness.AllFlavors {
		t.Run("containerd-"+flavor, func(t *testing.T) {
			d := harness.StartDaemon(t, flavor, harness.WithLegacyCgroups())
			ctx, ns := d.NewNamespace(t)
			ctx, cancel := context.WithTimeout(ctx, 45*time.Second)
			defer cancel()
			const id = "o4"
			// Last resort after the namespace cleanup: runc cannot delete crun's containers.
			t.Cleanup(func() {
				if _, err := os.Stat(harness.RuncStateDir(ns, id)); err == nil {
					d.KillShims(ns, "")
					c, cancel := context.WithTimeout(context.Background(), 10*time.Second)
					defer cancel()
					_ = exec.CommandContext(c, crun, "--root", filepath.Dir(harness.RuncStateDir(ns, id)), "delete", "--force", id).Run()
				}
			})

			ctr := newContainer(t, ctx, d, id, []string{"sh", "-c",
				"echo via-crun; while [ ! -e /tmp/go ]; do sleep 0.1; done; sleep 1; echo err-line >&2; exit 5"},
				withCrunReadableSpec)
			ioc, out, errb := bufferedIO(d)
			task, statusC := startTask(t, ctx, ctr, ioc, withRuncOptions(&options.Options{BinaryName: "crun"}))
			// crun keeps a "status" file in its state dir, runc a state.json.
			stateDir := harness.RuncStateDir(ns, id)
			if _, err := os.Stat(filepath.Join(stateDir, "status")); err != nil {
				entries, _ := os.ReadDir(stateDir)
				t.Errorf("no crun state (status file) in %s: %v; entries %v", stateDir, err, entries)
			}
			if _, err := os.Stat(filepath.Join(stateDir, "state.json")); err == nil {
				t.Errorf("runc's state.json in %s: the container was made by runc, not crun", stateDir)
			}
			if m := d.MountNamespaceMounts(d.BundleDir(ns, id)); len(m) == 0 && harness.HybridCgroups() {
				t.Errorf("no rootfs mount of the running container in the daemon's mount namespace: the leak check below would be vacuous")
			}
			// An update through crun: the resources reach it on its standard input, which
			// it opens by path (the lane's guest has no /dev/stdin).
			pids := int64(77)
			if err := task.Update(ctx, containerd.WithResources(&specs.LinuxResources{Pids: &specs.LinuxPids{Limit: &pids}})); err != nil {
				t.Errorf("update through crun: %v", err)
			} else if got := cgroupOf(t, task.Pid()).readInt(t, "pids", "pids.max", "pids.max"); got != pids {
				t.Errorf("pids.max = %d after the update through crun, want %d", got, pids)
			}
			if code := runExec(t, ctx, task, "go", "touch", "/tmp/go"); code != 0 {
				t.Errorf("exec through crun: exit code %d", code)
			}
			if code := exitCode(t, ctx, statusC); code != 5 {
				t.Errorf("exit code %d, want 5", code)
			}
			if _, err := task.Delete(ctx); err != nil {
				t.Fatalf("delete: %v", err)
			}
			if out.String() != "via-crun\n" || errb.String() != "err-line\n" {
				t.Errorf("stdout %q stderr %q, want %q and %q", out.String(), errb.String(), "via-crun\n", "err-line\n")
			}
			if _, err := os.Stat(stateDir); !os.IsNotExist(err) {
				t.Errorf("crun state %s left after delete (%v)", stateDir, err)
			}
			if err := harness.DeleteContainer(ctx, ctr); err != nil {
				t.Fatal(err)
			}
			expectNoLeftovers(t, d, ns, id)
			// The rootfs mount lives in the daemon's mount namespace, which the host's
			// mount table (used by the leak check above) does not show.
			if m := d.MountNamespaceMounts(d.BundleDir(ns, id)); len(m) > 0 {
				t.Errorf("mounts left in the daemon's mount namespace: %v", m)
			}
		})
	}
}

// Options 5: ShimCgroup (read by `start`) moves the shim daemon into that cgroup, in every
// v1 hierarchy that has it (or the v2 tree); one that exists nowhere fails task creation with an error naming
// it, and leaves nothing behind.
func TestOptionsShimCgroup(t *testing.T) {
	forEachFlavor(t, func(t *testing.T, d *harness.Daemon) {
		shimCgroup := "/ex-shimcg-" + harness.RandID(8)
		hierarchies := []string{"memory", "pids"}
		if cgroupV2() {
			hierarchies = []string{""} // one tree: the lines of /proc/<pid>/cgroup read 0::<path>
		}
		for _, h := range hierarchies {
			if err := os.Mkdir(filepath.Join(cgroupRoot, h, shimCgroup), 0o755); err != nil {
				t.Fatal(err)
			}
		}
		// Registered before the namespace, so it runs once the shim is gone.
		t.Cleanup(func() {
			if err := harness.RemoveCgroup(shimCgroup); err != nil {
				t.Errorf("remove %s: %v", shimCgroup, err)
			}
		})
		ctx, ns := d.NewNamespace(t)
		ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()

		const id = "o5"
		ctr := newContainer(t, ctx, d, id, loopArgs)
		task, err := ctr.NewTask(ctx, cio.NullIO, withRuncOptions(&options.Options{ShimCgroup: shimCgroup}))
		if err != nil {
			t.Fatalf("NewTask with ShimCgroup %s: %v", shimCgroup, err)
		}
		shim := onlyShim(t, d, ns, id)
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", shim.Pid))
		if err != nil {
			t.Fatal(err)
		}
		for _, h := range hierarchies {
			if !regexp.MustCompile(`(?m)^\d+:` + h + `:` + regexp.QuoteMeta(shimCgroup) + `$`).Match(data) {
				t.Errorf("shim %d is not in %s cgroup %s:\n%s", shim.Pid, h, shimCgroup, data)
			}
		}
		if err := task.Start(ctx); err != nil {
			t.Fatal(err)
		}
		if err := harness.DeleteContainer(ctx, ctr); err != nil {
			t.Fatalf("delete: %v", err)
		}
		expectNoLeftovers(t, d, ns, id)

		const bad = "o5-missing"
		missing := "/ex-shimcg-missing-" + harness.RandID(8)
		ctr = newContainer(t, ctx, d, bad, loopArgs)
		if _, err := ctr.NewTask(ctx, cio.NullIO, withRuncOptions(&options.Options{ShimCgroup: missing})); err == nil {
			t.Errorf("NewTask with ShimCgroup %s (exists nowhere) succeeded", missing)
		} else if !strings.Contains(err.Error(), missing) {
			t.Errorf("NewTask with a missing ShimCgroup: %v; want the error to name %s", err, missing)
		}
		expectNoLeftovers(t, d, ns, bad)
	})
}
