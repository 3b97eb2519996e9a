package integration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/console"
	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/containers"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/oci"
	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/example/containerd-shim-example-v2/integration/harness"
)

// Rootless containerd (rootlesskit, nerdctl's containerd-rootless.sh): containerd runs as
// an unprivileged user mapped to root in a user namespace, and so do the shims it starts
// and the runtimes they fork; nothing of theirs is privileged on the host. The shim must
// not take for granted what only the host's root may do (its cgroup warmings, OOM
// watching, the rootfs mount, its sockets and state under /run). Under cgroup v1 the user
// gets no cgroup and containers run without one (cgroupsPath "", no limits); under v2
// (the cgroup v2 lane) it runs twice: with a delegated cgroup (systemd's Delegate=yes),
// where limits, OOM kills and statistics work as under a privileged daemon, and without
// one, where containers again have no cgroup of their own.
func TestRootlessContainerd(t *testing.T) {
	type kind struct {
		name string
		opt  harness.DaemonOption
	}
	kinds := []kind{{"no-cgroup", harness.WithRootless()}}
	if cgroupV2() {
		kinds = []kind{{"delegated-cgroup", harness.WithRootless()}, {"undelegated", harness.WithRootlessUndelegated()}}
	}
	for _, flavor := range harness.AllFlavors {
		for _, kind := range kinds {
			t.Run("containerd-"+flavor+"/"+kind.name, func(t *testing.T) {
				testRootless(t, harness.StartDaemon(t, flavor, kind.opt))
			})
		}
	}
}

// testRootless is TestRootlessContainerd's work under one daemon.
func testRootless(t *testing.T, d *harness.Daemon) {
	ctx, ns := d.NewNamespace(t)
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	// ctr's own default of 1024 CPU shares is a limit runc cannot set on a
	// container without a cgroup; nerdctl and CRI set none.
	ctrRunRootless := func(id string, args ...string) []string {
		return ctrRun(d, append([]string{"--cgroup", d.RootlessCgroupsPath(id), "--cpu-shares", "0"}, args...)...)
	}

	// runSleeper starts a detached container running sleep and returns its shim.
	runSleeper := func(t *testing.T, id string) harness.Proc {
		t.Helper()
		if _, stderr, code, err := d.Ctr(ctx, ctrRunRootless(id, "-d", harness.ImageName, id, "sleep", "1000")...); err != nil || code != 0 {
			t.Fatalf("ctr run -d %s: code %d err %v stderr %q", id, code, err, stderr)
		}
		shims := d.ShimProcesses(ns, id)
		if len(shims) != 1 {
			t.Fatalf("shim processes of %s: %v, want one", id, shims)
		}
		return shims[0]
	}

	// upgradeRootless upgrades id's shim in place to the second build, installed for
	// the user under name, as the operator does it: as that user, inside its namespaces
	// (the shims' sockets are in its private /run/containerd). It returns the binary and
	// the command's output.
	upgradeRootless := func(t *testing.T, id, name string) (string, string) {
		t.Helper()
		newBin, err := d.RootlessInstall(secondShimBuild(t), name, harness.ShimBinaryName)
		if err != nil {
			t.Fatal(err)
		}
		stdout, stderr, code, err := harness.RunCmd(ctx, d.RootlessCmd(ctx, newBin, "upgrade", "-address", shimAddress(t, d, ns, id), "-binary", newBin))
		if err != nil || code != 0 || !strings.Contains(stdout, "-> "+upgradeBuildVersion) {
			t.Fatalf("upgrade as the rootless user: code %d err %v stdout %q stderr %q", code, err, stdout, stderr)
		}
		return newBin, stdout
	}

	t.Run("run-streams-exit-code", func(t *testing.T) {
		const id = "rl-run"
		stdout, stderr, code, err := d.Ctr(ctx, ctrRunRootless(id, "--rm", harness.ImageName, id,
			"sh", "-c", "echo out; echo err >&2; id -u; exit 3")...)
		if err != nil || code != 3 || stdout != "out\n0\n" || withoutCtrLog(stderr) != "err\n" {
			t.Errorf("ctr run --rm: code %d err %v stdout %q stderr %q, want 3, \"out\\n0\\n\", \"err\\n\"", code, err, stdout, stderr)
		}
		expectNoLeftovers(t, d, ns, id)
		expectNoRootlessMounts(t, d, ns, id)
	})

	t.Run("exec-kill-delete", func(t *testing.T) {
		const id = "rl-sleep"
		shim := runSleeper(t, id)
		// The shim really is unprivileged: it runs as the user on the host.
		if uid := processUID(t, shim.Pid); uid != d.RootlessUID() {
			t.Errorf("the shim (pid %d) runs as uid %d on the host, want %d (%s)", shim.Pid, uid, d.RootlessUID(), harness.RootlessUser)
		}
		stdout, stderr, code, err := d.Ctr(ctx, "task", "exec", "--exec-id", "e1", id, "sh", "-c", "echo exec-out; echo exec-err >&2; exit 5")
		if err != nil || code != 5 || stdout != "exec-out\n" || withoutCtrLog(stderr) != "exec-err\n" {
			t.Errorf("ctr task exec: code %d err %v stdout %q stderr %q, want 5, exec-out, exec-err", code, err, stdout, stderr)
		}
		// A terminal: the console socket, the pty master handed to the shim, the size
		// (ctr sets it once the exec has started: the shell waits for it; busybox's stty
		// prints nothing for a terminal of no size yet).
		out, code := ctrUnderPty(t, ctx, d, console.WinSize{Height: 31, Width: 91}, "task", "exec", "--tty", "--exec-id", "t1", id, "sh", "-c", "tty; for i in $(seq 100); do s=$(stty size 2>/dev/null); case $s in [1-9]*) break;; esac; sleep 0.05; done; echo size $s; exit 6")
		if code != 6 || !strings.Contains(out, "/dev/pts/") || !strings.Contains(out, "size 31 91") {
			t.Errorf("ctr task exec --tty: code %d, output %q; want 6, a /dev/pts/ terminal of 31 rows and 91 columns", code, out)
		}
		expectRootlessPs(t, ctx, d, id)
		expectRootlessMetrics(t, ctx, d, id)
		expectRootlessPause(t, ctx, d, id)
		expectRootlessUpdate(t, ctx, d, id)
		killAndRemoveRootless(t, ctx, d, ns, id)
	})

	t.Run("ps-in-a-shared-pid-namespace", func(t *testing.T) {
		// No pid namespace of its own: without a cgroup the shim lists the
		// container by descent from its init and execs, by their sessions,
		// which keep the processes whose parent died (reparented to the shim),
		// and by its mount namespace.
		const id = "rl-hostpid"
		ctr := newContainer(t, ctx, d, id, []string{"sh", "-c", `sh -c "sleep 1001 &"; exec sleep 1000`},
			oci.WithCgroup(d.RootlessCgroupsPath(id)), oci.WithHostNamespace(specs.PIDNamespace), withProcBound)
		task, _ := startTask(t, ctx, ctr, cio.NullIO)
		ctrOK(t, ctx, d, "task", "exec", "--detach", "--exec-id", "e1", id, "sh", "-c", `sh -c "sleep 1003 &"; exec sleep 1002`)
		// An exec that has exited by the time ctr returns, leaving a sleep in its session.
		ctrOK(t, ctx, d, "task", "exec", "--exec-id", "e2", id, "sh", "-c", "sleep 1005 </dev/null >/dev/null 2>&1 &")
		// And one that leaves a daemon: a session of its own, no session or parent
		// to find it by; it is in the container's mount namespace.
		ctrOK(t, ctx, d, "task", "exec", "--exec-id", "e3", id, "sh", "-c", "setsid sleep 1004 </dev/null >/dev/null 2>&1 &")
		want := []string{"sleep 1000", "sleep 1001", "sleep 1002", "sleep 1003", "sleep 1004", "sleep 1005"}
		if harness.Runtime() == "io.example.v2" {
			// What the exited exec left is recorded; the record crosses an in-place
			// upgrade, and the successor answers below.
			upgradeRootless(t, id, "upgrade-ps")
		}
		// Every sleep of the container, found on the host by its command line and
		// the container's mount namespace (the init's, read now: other tests on the
		// machine may run sleeps of the same command line).
		mntNS, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", task.Pid()))
		if err != nil {
			t.Fatalf("the init's mount namespace: %v", err)
		}
		sleeps := func() []harness.Proc {
			var out []harness.Proc
			for _, p := range harness.Processes(func(args []string) bool { return slices.Contains(want, strings.Join(args, " ")) }) {
				if ns, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", p.Pid)); err == nil && ns == mntNS {
					out = append(out, p)
				}
			}
			return out
		}
		t.Cleanup(func() {
			for _, p := range sleeps() {
				_ = syscall.Kill(p.Pid, syscall.SIGKILL)
			}
		})
		stockWithoutCgroup := harness.Runtime() != "io.example.v2" && d.RootlessCgroupsPath(id) == ""
		var got []string
		ok := eventually(5*time.Second, func() bool {
			pids, err := task.Pids(ctx)
			if err != nil {
				got = []string{err.Error()}
				return stockWithoutCgroup // its Pids fails there
			}
			got = got[:0]
			for _, p := range pids {
				got = append(got, commandLine(int(p.Pid)))
			}
			slices.Sort(got)
			return slices.Equal(got, want)
		})
		if stockWithoutCgroup {
			t.Logf("stock shim, no cgroup: Pids says %q", got)
		} else if !ok {
			t.Errorf("Pids lists %q, want %q (the init, the running exec and the sleeps each left behind, the exited execs' too)", got, want)
		}
		// A kill with all reaches every process without a cgroup to find them in:
		// SIGSTOP, and each sleep is stopped (runc 1.1's kill --all fails there,
		// "lstat : no such file or directory"; later runcs signal the init alone).
		_, stderr, code, err := d.Ctr(ctx, "task", "kill", "--all", "--signal", "SIGSTOP", id)
		states := func() map[string]byte {
			m := map[string]byte{}
			for _, p := range sleeps() {
				if st, err := harness.ReadProcStat(p.Pid); err == nil {
					m[strings.Join(p.Args, " ")] = st.State
				}
			}
			return m
		}
		var seen map[string]byte
		allStopped := eventually(5*time.Second, func() bool {
			seen = states()
			for _, w := range want {
				if seen[w] != 'T' {
					return false
				}
			}
			return true
		})
		switch {
		case stockWithoutCgroup:
			t.Logf("stock shim, no cgroup: ctr task kill --all: code %d err %v stderr %q; states %q", code, err, withoutCtrLog(stderr), seen)
		case err != nil || code != 0:
			t.Errorf("ctr task kill --all --signal SIGSTOP: code %d err %v stderr %q", code, err, withoutCtrLog(stderr))
		case !allStopped:
			t.Errorf("after kill --all SIGSTOP the sleeps' states are %q, want every one stopped (T)", seen)
		}
		ctrOK(t, ctx, d, "task", "kill", "--signal", "SIGCONT", id) // the init; the others die with it below
		if stockWithoutCgroup {
			// The 2.x stock shim reports an init's exit once the container's running
			// execs have exited, and without a cgroup its kill --all ends none: the
			// task stays RUNNING while e1 runs. Its processes are ended here instead.
			ctrOK(t, ctx, d, "task", "kill", "--signal", "SIGKILL", id)
			time.Sleep(2 * time.Second)
			t.Logf("stock shim, no cgroup: 2 s after the init's SIGKILL the task is %s; left running: %v", clientStatus(t, ctx, d, id).Status, sleeps())
			for _, p := range sleeps() {
				_ = syscall.Kill(p.Pid, syscall.SIGKILL)
			}
			removeKilledRootless(t, ctx, d, ns, id)
			return
		}
		killAndRemoveRootless(t, ctx, d, ns, id)
		if left := sleeps(); len(left) > 0 {
			t.Errorf("processes of the container left running after its init was killed and it was deleted: %v", left)
		}
	})

	t.Run("upgrade-in-place", func(t *testing.T) {
		const id = "rl-up"
		shim := runSleeper(t, id)
		newBin, stdout := upgradeRootless(t, id, "upgrade-b")
		if !strings.Contains(stdout, fmt.Sprintf("pid %d: ", shim.Pid)) {
			t.Fatalf("upgrade as the rootless user names no pid %d: %q", shim.Pid, stdout)
		}
		if exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", shim.Pid)); err != nil || exe != newBin {
			t.Errorf("the shim (pid %d) runs %q (%v) after the upgrade, want %s", shim.Pid, exe, err, newBin)
		}
		stdout, stderr, code, err := d.Ctr(ctx, "task", "exec", "--exec-id", "e-up", id, "sh", "-c", "echo after; exit 7")
		if err != nil || code != 7 || stdout != "after\n" {
			t.Errorf("exec after the upgrade: code %d err %v stdout %q stderr %q, want 7, after", code, err, stdout, stderr)
		}
		// The successor knows as well whether the container has a cgroup of its own.
		expectRootlessPs(t, ctx, d, id)
		expectRootlessMetrics(t, ctx, d, id)
		killAndRemoveRootless(t, ctx, d, ns, id)
	})

	t.Run("oom-in-delegated-cgroup", func(t *testing.T) {
		if d.RootlessCgroupsPath("rl-oom") == "" {
			t.Skip("the user has no cgroup of its own here, so a container has no limit to hit (the cgroup v2 lane's delegated run has)")
		}
		const id = "rl-oom"
		evs := subscribeTaskEvents(t, ctx, d, ns)
		ctr := newContainer(t, ctx, d, id, memoryHogArgs, oci.WithCgroup(d.RootlessCgroupsPath(id)), oci.WithMemoryLimit(32<<20))
		task, statusC := startTask(t, ctx, ctr, cio.NullIO)
		if code := exitCode(t, ctx, statusC); code != 137 {
			t.Errorf("exit status %d, want 137 (SIGKILL by the OOM killer)", code)
		}
		expectOOMBeforeExit(t, evs, id)
		if _, err := task.Delete(ctx); err != nil {
			t.Errorf("delete: %v", err)
		}
	})
}

// killAndRemoveRootless kills a running container with SIGKILL, checks its exit status
// (137), deletes it through ctr and checks that nothing of it is left, in the host's view
// and in the daemon's own mount namespace.
func killAndRemoveRootless(t *testing.T, ctx context.Context, d *harness.Daemon, ns, id string) {
	t.Helper()
	ctrOK(t, ctx, d, "task", "kill", "--signal", "SIGKILL", id)
	removeKilledRootless(t, ctx, d, ns, id)
}

// removeKilledRootless is killAndRemoveRootless after its kill: the checks and the deletes.
func removeKilledRootless(t *testing.T, ctx context.Context, d *harness.Daemon, ns, id string) {
	t.Helper()
	waitTaskStatus(t, ctx, d, id, "STOPPED", 10*time.Second)
	if st := clientStatus(t, ctx, d, id); st.ExitStatus != 137 {
		t.Errorf("exit status after SIGKILL = %d, want 137", st.ExitStatus)
	}
	ctrOK(t, ctx, d, "task", "delete", id)
	ctrOK(t, ctx, d, "container", "delete", id)
	expectNoLeftovers(t, d, ns, id)
	expectNoRootlessMounts(t, d, ns, id)
}

// expectRootlessPs checks that `ctr task ps` lists the container's processes, the init
// and a detached exec's, and nothing else. In a cgroup of its own the runtime lists them
// from it; without one the runtime cannot (the stock shim's Pids fails: "unable to get all
// container pids"), and the shim lists the container's pid namespace from /proc.
func expectRootlessPs(t *testing.T, ctx context.Context, d *harness.Daemon, id string) {
	t.Helper()
	ctrOK(t, ctx, d, "task", "exec", "--detach", "--exec-id", "e2", id, "sleep", "1000")
	init := waitTaskStatus(t, ctx, d, id, "RUNNING", 5*time.Second).Pid
	stdout, stderr, code, err := d.Ctr(ctx, "task", "ps", id)
	if d.RootlessCgroupsPath(id) == "" && harness.Runtime() != "io.example.v2" {
		t.Logf("stock shim, no cgroup: ctr task ps says (code %d) %q %q", code, stdout, stderr)
		return
	}
	if err != nil || code != 0 {
		t.Fatalf("ctr task ps %s: code %d err %v stderr %q", id, code, err, stderr)
	}
	// INFO is "-" for the init; an exec's names its exec id (see TestTaskListAndPs).
	rows := map[int]string{}
	for _, line := range strings.Split(stdout, "\n") {
		if f := strings.Fields(line); len(f) > 0 {
			if pid, err := strconv.Atoi(f[0]); err == nil {
				rows[pid] = strings.Join(f[1:], " ")
			}
		}
	}
	execs := 0
	for pid, info := range rows {
		if pid != init && strings.Contains(info, "e2") {
			execs++
		}
	}
	if _, ok := rows[init]; !ok || execs != 1 || len(rows) != 2 {
		t.Errorf("ctr task ps %s: want the init (pid %d) and exec e2, nothing else; got\n%s", id, init, stdout)
	}
}

// expectRootlessPause pauses and resumes the container when it has a cgroup of its own
// (the freezer is a cgroup's); without one the runtime cannot, and the shim says so with
// FailedPrecondition (the stock shim passes the runtime's "cgroups not configured for
// container" on as Unknown).
func expectRootlessPause(t *testing.T, ctx context.Context, d *harness.Daemon, id string) {
	t.Helper()
	if d.RootlessCgroupsPath(id) != "" {
		ctrOK(t, ctx, d, "task", "pause", id)
		waitTaskStatus(t, ctx, d, id, "PAUSED", 5*time.Second)
		ctrOK(t, ctx, d, "task", "resume", id)
		waitTaskStatus(t, ctx, d, id, "RUNNING", 5*time.Second)
		return
	}
	_, stderr, code, err := d.Ctr(ctx, "task", "pause", id)
	if harness.Runtime() != "io.example.v2" {
		t.Logf("stock shim, no cgroup: ctr task pause says (code %d) %q", code, stderr)
	} else if err != nil || code == 0 || !strings.Contains(stderr, "no cgroup of its own") || !strings.Contains(stderr, "failed precondition") {
		t.Errorf("ctr task pause %s without a cgroup: code %d err %v stderr %q, want a failed precondition naming the missing cgroup", id, code, err, stderr)
	}
	waitTaskStatus(t, ctx, d, id, "RUNNING", 5*time.Second)
}

// expectRootlessUpdate sets a memory limit: in a cgroup of its own it lands in the
// cgroup's memory.max; without one the runtime cannot set it, and the shim says so with
// FailedPrecondition (the stock shim passes the runtime's error on as Unknown).
func expectRootlessUpdate(t *testing.T, ctx context.Context, d *harness.Daemon, id string) {
	t.Helper()
	ctr, err := d.Client().LoadContainer(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	task, err := ctr.Task(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	limit := int64(96 << 20)
	err = task.Update(ctx, containerd.WithResources(&specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: &limit}}))
	if path := d.RootlessCgroupsPath(id); path != "" {
		if err != nil {
			t.Fatalf("update the memory limit in a delegated cgroup: %v", err)
		}
		if b, err := os.ReadFile(filepath.Join("/sys/fs/cgroup", path, "memory.max")); err != nil || strings.TrimSpace(string(b)) != strconv.FormatInt(limit, 10) {
			t.Errorf("memory.max after the update: %q (%v), want %d", b, err, limit)
		}
		return
	}
	if harness.Runtime() != "io.example.v2" {
		t.Logf("stock shim, no cgroup: update says %v", err)
	} else if !errdefs.IsFailedPrecondition(err) || err == nil || !strings.Contains(err.Error(), "no cgroup of its own") {
		t.Errorf("update without a cgroup: %v, want a failed precondition naming the missing cgroup", err)
	}
}

// expectRootlessMetrics checks that a rootless container's statistics are its own
// cgroup's: in a delegated cgroup, one that holds only its sleep and its exec's; without
// one (v1, or v2 undelegated), the cgroup it shares with the shim and the daemon (and,
// outside a test, a user's session) is not reported as its own: NotFound. The stock shim
// reports that shared cgroup's figures as the container's.
func expectRootlessMetrics(t *testing.T, ctx context.Context, d *harness.Daemon, id string) {
	t.Helper()
	stdout, stderr, code, err := d.Ctr(ctx, "task", "metrics", id)
	if d.RootlessCgroupsPath(id) != "" {
		rows := map[string]string{}
		for _, line := range strings.Split(stdout, "\n") {
			if f := strings.Fields(line); len(f) >= 2 {
				rows[f[0]] = f[1]
			}
		}
		if err != nil || code != 0 || rows["pids.current"] != "2" {
			t.Errorf("ctr task metrics %s: code %d err %v, pids.current %q (want 2: the sleep and exec e2's, nothing else)\nstdout %q\nstderr %q", id, code, err, rows["pids.current"], stdout, stderr)
		}
		return
	}
	if harness.Runtime() != "io.example.v2" {
		t.Logf("stock shim, no cgroup: ctr task metrics says (code %d) %q", code, stdout)
		return
	}
	// containerd drops a task's failed Metrics from its answer: ctr then has nothing.
	if err != nil || code == 0 || !strings.Contains(stderr, "no metrics received") {
		t.Errorf("ctr task metrics %s (no cgroup of its own): code %d err %v stdout %q stderr %q, want none (no metrics received)", id, code, err, stdout, stderr)
	}
}

// processUID is the real uid of a process, from /proc/<pid>/status.
func processUID(t *testing.T, pid int) int {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatalf("status of pid %d: %v", pid, err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) > 1 && f[0] == "Uid:" {
			uid, _ := strconv.Atoi(f[1])
			return uid
		}
	}
	t.Fatalf("status of pid %d has no Uid line", pid)
	return -1
}

// expectNoRootlessMounts checks the rootless daemon's own mount namespace, where its
// shims mount the rootfs (the host does not see those mounts, so expectNoLeftovers cannot).
func expectNoRootlessMounts(t *testing.T, d *harness.Daemon, ns, id string) {
	t.Helper()
	left := []string{}
	if !eventually(harness.LeakTimeout, func() bool {
		left = left[:0]
		for _, m := range d.MountNamespaceMounts(d.Base) {
			if strings.Contains(m+"/", "/"+ns+"/"+id+"/") {
				left = append(left, m)
			}
		}
		return len(left) == 0
	}) {
		t.Errorf("mounts of %s/%s left in the daemon's mount namespace: %v", ns, id, left)
	}
}

// commandLine is a process's arguments joined by spaces ("" once it is gone).
func commandLine(pid int) string {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	return strings.TrimSpace(strings.ReplaceAll(string(b), "\x00", " "))
}

// withProcBound binds the daemon's /proc into the container instead of mounting a proc
// of its own, which a user namespace may not do for a pid namespace it does not own (as
// nerdctl does for a rootless container in the host's pid namespace).
func withProcBound(_ context.Context, _ oci.Client, _ *containers.Container, s *oci.Spec) error {
	for i, m := range s.Mounts {
		if m.Destination == "/proc" {
			s.Mounts[i] = specs.Mount{Destination: "/proc", Type: "bind", Source: "/proc", Options: []string{"rbind", "nosuid", "noexec", "nodev"}}
		}
	}
	return nil
}
