package integration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/containerd/console"

	"github.com/example/containerd-shim-example-v2/integration/harness"
)

// Docker Engine as a caller: a private dockerd (moby v2) on a private containerd 2.x whose
// shims run runc 1.5 (see harness/docker.go), containers started with the docker CLI by
// runtime type (`--runtime io.example.v2`) and by daemon.json name (`--runtime example`).
// One dockerd serves all subtests; the churn subtest runs last and checks that nothing of
// any of them is left.

// dockerStopGrace is the grace period of the `docker stop -t` subtest, and
// dockerStopSlack how much longer than it the stop may take (SIGKILL, reaping, dockerd's
// bookkeeping) on a busy 2-core machine.
const (
	dockerStopGrace = 2 * time.Second
	dockerStopSlack = 8 * time.Second
)

// dockerChurnRuns is how many `docker run --rm` the churn subtest makes in a row.
const dockerChurnRuns = 50

// dockerOptsRuntime is the daemon.json runtime with an options table (see optionsRuntime).
const dockerOptsRuntime = "example-opts"

// dockerEnv is the dockerd the subtests share, and the test image loaded into it.
type dockerEnv struct {
	d     *harness.Daemon
	k     *harness.Docker
	image string
	// runcLog is where the OCI runtime of dockerOptsRuntime (a wrapper of runc) writes
	// each command line it is run with.
	runcLog string
}

func TestDocker(t *testing.T) {
	if why := harness.DockerMissing(); why != "" {
		t.Skip(why)
	}
	e := startDockerEnv(t)
	t.Run("run", e.testRun)
	t.Run("shim", e.testShim)
	t.Run("options", e.testOptions)
	t.Run("lifecycle", e.testLifecycle)
	t.Run("terminal", e.testTerminal)
	t.Run("live-restore", e.testLiveRestore)
	t.Run("churn", e.testChurn)
}

// startDockerEnv starts a private containerd 2.x and a dockerd on it, with the
// options runtime, and loads the test image.
func startDockerEnv(t *testing.T) *dockerEnv {
	t.Helper()
	start := time.Now()
	d := harness.StartDaemon(t, harness.Flavor2x, harness.WithRunc(harness.DockerRunc))
	opts, runcLog := optionsRuntime(t)
	k := harness.StartDocker(t, d, opts)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	img, err := k.LoadTestImage(ctx)
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("containerd %s, dockerd %s and the image ready in %v", d.Flavor, harness.DockerVersion, time.Since(start).Round(time.Millisecond))
	return &dockerEnv{d: d, k: k, image: img, runcLog: runcLog}
}

// docker runs the docker CLI and fails the test if it could not run at all.
func (e *dockerEnv) docker(t *testing.T, ctx context.Context, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	stdout, stderr, code, err := e.k.Run(ctx, args...)
	if err != nil {
		t.Fatalf("docker %s: %v\nstderr: %s", strings.Join(args, " "), err, stderr)
	}
	return stdout, stderr, code
}

// dockerOK runs the docker CLI, fails the test unless it exits 0, and returns its stdout
// without the trailing newline.
func (e *dockerEnv) dockerOK(t *testing.T, ctx context.Context, args ...string) string {
	t.Helper()
	out, errOut, code := e.docker(t, ctx, args...)
	if code != 0 {
		t.Fatalf("docker %s: exit code %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, out, errOut)
	}
	return strings.TrimRight(out, "\n")
}

// runArgs is `run <args...>` with the runtime and --network none (dockerd has no bridge).
func (e *dockerEnv) runArgs(runtime string, args ...string) []string {
	return append([]string{"run", "--runtime", runtime, "--network", "none"}, args...)
}

// inspect returns `docker inspect -f format id`.
func (e *dockerEnv) inspect(t *testing.T, ctx context.Context, id, format string) string {
	t.Helper()
	return e.dockerOK(t, ctx, "inspect", "-f", format, id)
}

// inspectPid returns the container's init PID (0 when it does not run).
func (e *dockerEnv) inspectPid(t *testing.T, ctx context.Context, id string) int {
	t.Helper()
	s := e.inspect(t, ctx, id, "{{.State.Pid}}")
	pid, err := strconv.Atoi(s)
	if err != nil {
		t.Fatalf("docker inspect %s: pid %q", id, s)
	}
	return pid
}

// expectShimParent fails the test unless the container's init process (host pid) is a
// child of a shim of the runtime under test that this test's containerd started for the
// container in dockerd's namespace.
func (e *dockerEnv) expectShimParent(t *testing.T, id string, pid int) {
	t.Helper()
	st, err := harness.ReadProcStat(pid)
	if err != nil {
		t.Fatalf("container %s: init pid %d: %v", id, pid, err)
	}
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", st.PPid))
	if err != nil {
		t.Fatalf("container %s: parent %d of its init: %v", id, st.PPid, err)
	}
	args := strings.Split(strings.TrimRight(string(raw), "\x00"), "\x00")
	want := harness.RuntimeBinaryName(harness.Runtime())
	if filepath.Base(args[0]) != want {
		t.Fatalf("container %s: the parent of its init (pid %d) is %q, want the shim %s", id, st.PPid, args, want)
	}
	for flag, want := range map[string]string{"-namespace": e.k.Namespace, "-id": id, "-address": e.d.Address} {
		if got := argAfter(args, flag); got != want {
			t.Errorf("container %s: shim %d has %s %q, want %q (command line %q)", id, st.PPid, flag, got, want, args)
		}
	}
}

// argAfter returns the argument that follows flag in args, or "".
func argAfter(args []string, flag string) string {
	for i, a := range args {
		if a == flag && i+1 < len(args) {
			return args[i+1]
		}
	}
	return ""
}

// expectGone fails the test unless dockerd no longer lists the containers and nothing of
// them is left (shims, mounts, runc state, bundles, sockets, cgroups).
func (e *dockerEnv) expectGone(t *testing.T, ctx context.Context, ids ...string) {
	t.Helper()
	all, err := e.k.Containers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range all {
		for _, id := range ids {
			if c == id {
				t.Errorf("container %s still listed by docker ps -a", id)
			}
		}
	}
	if left := e.k.WaitNoLeftovers(harness.LeakTimeout, ids...); len(left) > 0 {
		t.Errorf("leftovers after the containers were removed:\n  %s", strings.Join(left, "\n  "))
	}
}

// Output and exit code of `docker run --rm`, by runtime type and by daemon.json name: the
// container's stdout and stderr come back separately and exactly, and the CLI exits with the
// container's exit code.
func (e *dockerEnv) testRun(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, runtime := range []string{harness.Runtime(), harness.DockerRuntimeName} {
		out, errOut, code := e.docker(t, ctx, e.runArgs(runtime, "--rm", e.image, "sh", "-c", "echo out; echo err >&2; exit 3")...)
		if out != "out\n" || errOut != "err\n" || code != 3 {
			t.Errorf("docker run --runtime %s: stdout %q, stderr %q, exit code %d; want \"out\\n\", \"err\\n\", 3", runtime, out, errOut, code)
		}
	}
}

// optionsRuntime returns dockerOptsRuntime: the runtime under test with options in
// daemon.json that make its OCI runtime a wrapper of runc logging its command lines to the
// returned file. dockerd hands a runtime type other than runc-v2 its options as
// runtimeoptions.v1.Options, so for this shim the table names a TOML file of its options
// (`ConfigPath`, as CRI's config_path); runc-v2's options are containerd.runc.v1.Options,
// where `BinaryName` is a field of its own.
func optionsRuntime(t *testing.T) (harness.DockerRuntime, string) {
	dir := t.TempDir()
	runcLog := filepath.Join(dir, "runc.log")
	wrapper := filepath.Join(dir, "logging-runc")
	script := fmt.Sprintf("#!/bin/sh\necho \"$*\" >> %s\nexec %s \"$@\"\n", runcLog, harness.DockerRunc)
	if err := os.WriteFile(wrapper, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	if harness.Runtime() == "io.containerd.runc.v2" {
		return harness.DockerRuntime{Name: dockerOptsRuntime, Options: map[string]any{"BinaryName": wrapper}}, runcLog
	}
	toml := filepath.Join(dir, "shim.toml")
	if err := os.WriteFile(toml, []byte(fmt.Sprintf("BinaryName = %q\n", wrapper)), 0o644); err != nil {
		t.Fatal(err)
	}
	return harness.DockerRuntime{Name: dockerOptsRuntime, Options: map[string]any{"ConfigPath": toml}}, runcLog
}

// Runtime options from daemon.json reach the shim: a container of dockerOptsRuntime runs,
// and it was created by the OCI runtime its options name.
func (e *dockerEnv) testOptions(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cidFile := filepath.Join(t.TempDir(), "cid")
	out, errOut, code := e.docker(t, ctx, e.runArgs(dockerOptsRuntime, "--rm", "--cidfile", cidFile, e.image, "sh", "-c", "echo opts; exit 6")...)
	if out != "opts\n" || code != 6 {
		t.Fatalf("docker run --runtime %s: stdout %q, stderr %q, exit code %d; want \"opts\\n\", 6", dockerOptsRuntime, out, errOut, code)
	}
	id, err := os.ReadFile(cidFile)
	if err != nil {
		t.Fatal(err)
	}
	log, _ := os.ReadFile(e.runcLog)
	if !regexp.MustCompile(`(^|\n)(.* )?create .*` + string(id)).Match(log) {
		t.Errorf("the runtime options' BinaryName did not create container %s; its log:\n%s", id, log)
	}
	e.expectGone(t, ctx, string(id))
}

// The containers really run under the runtime under test: the parent of each container's
// init is a shim of that runtime (containerd-shim-example-v2, not containerd-shim-runc-v2)
// started by this containerd for dockerd's namespace and the container, docker records the
// runtime it was asked for, and the bundle names the shim binary containerd started.
func (e *dockerEnv) testShim(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var ids []string
	for _, runtime := range []string{harness.Runtime(), harness.DockerRuntimeName} {
		id := e.dockerOK(t, ctx, e.runArgs(runtime, "-d", e.image, "sleep", "1000")...)
		ids = append(ids, id)
		if got := e.inspect(t, ctx, id, "{{.HostConfig.Runtime}}"); got != runtime {
			t.Errorf("docker inspect: HostConfig.Runtime %q, want %q", got, runtime)
		}
		e.expectShimParent(t, id, e.inspectPid(t, ctx, id))
		path, err := os.ReadFile(filepath.Join(e.d.BundleDir(e.k.Namespace, id), "shim-binary-path"))
		if err != nil {
			t.Errorf("container %s: %v", id, err)
		} else if want := filepath.Join(e.d.BinDir, harness.RuntimeBinaryName(harness.Runtime())); harness.Runtime() == harness.DefaultRuntime && string(path) != want {
			t.Errorf("container %s: containerd started shim %q, want %q", id, path, want)
		}
	}
	for _, id := range ids {
		if shims := e.d.ShimProcesses(e.k.Namespace, id); len(shims) != 1 {
			t.Errorf("shims of container %s: %v, want one", id, shims)
		}
	}
	e.dockerOK(t, ctx, append([]string{"rm", "-f"}, ids...)...)
	e.expectGone(t, ctx, ids...)
}

// A detached container through its life: `docker logs` has what it wrote to each stream,
// `docker exec` relays output, stdin and exit code, `docker stats` reports its memory,
// `docker restart` starts a new init under a new shim, `docker stop -t 2` of an init that
// ignores SIGTERM waits the grace period and ends in SIGKILL (exit code 137), `docker rm -f`
// removes a stopped and a running container with nothing left.
func (e *dockerEnv) testLifecycle(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const script = `trap '' TERM; echo line-out; echo line-err >&2; while :; do sleep 0.1; done`
	id := e.dockerOK(t, ctx, e.runArgs(harness.Runtime(), "-d", e.image, "sh", "-c", script)...)

	var logOut, logErr string
	if !eventually(10*time.Second, func() bool {
		logOut, logErr, _ = e.docker(t, ctx, "logs", id)
		return logOut == "line-out\n" && logErr == "line-err\n"
	}) {
		t.Errorf("docker logs: stdout %q, stderr %q; want \"line-out\\n\", \"line-err\\n\"", logOut, logErr)
	}

	out, errOut, code := e.docker(t, ctx, "exec", id, "sh", "-c", "echo exec-out; echo exec-err >&2; exit 5")
	if out != "exec-out\n" || errOut != "exec-err\n" || code != 5 {
		t.Errorf("docker exec: stdout %q, stderr %q, exit code %d; want \"exec-out\\n\", \"exec-err\\n\", 5", out, errOut, code)
	}
	cmd := e.k.Cmd(ctx, "exec", "-i", id, "sh", "-c", "cat; echo done")
	cmd.Stdin = strings.NewReader("from stdin\n")
	if got, err := cmd.Output(); err != nil || string(got) != "from stdin\ndone\n" {
		t.Errorf("docker exec -i: stdout %q, error %v; want \"from stdin\\ndone\\n\"", got, err)
	}

	name := strings.TrimPrefix(e.inspect(t, ctx, id, "{{.Name}}"), "/")
	stats := e.dockerOK(t, ctx, "stats", "--no-stream", "--format", "{{.Name}}|{{.MemUsage}}|{{.PIDs}}", id)
	if f := strings.Split(stats, "|"); len(f) != 3 || f[0] != name || !memUsage.MatchString(f[1]) || f[2] == "0" {
		t.Errorf("docker stats --no-stream: %q, want one row %q|<non-zero memory usage> / <limit>|<pids>", stats, name)
	}

	oldPid := e.inspectPid(t, ctx, id)
	e.dockerOK(t, ctx, "restart", "-t", "1", id)
	newPid := e.inspectPid(t, ctx, id)
	if status := e.inspect(t, ctx, id, "{{.State.Status}}"); status != "running" || newPid == 0 || newPid == oldPid {
		t.Errorf("after docker restart: status %q, init pid %d (was %d); want running under a new pid", status, newPid, oldPid)
	}
	if harness.PidExists(oldPid) {
		t.Errorf("the init of before the restart (pid %d) still exists", oldPid)
	}
	e.expectShimParent(t, id, newPid)

	begin := time.Now()
	e.dockerOK(t, ctx, "stop", "-t", strconv.Itoa(int(dockerStopGrace/time.Second)), id)
	took := time.Since(begin)
	if took < dockerStopGrace || took > dockerStopGrace+dockerStopSlack {
		t.Errorf("docker stop -t %v of an init ignoring SIGTERM took %v, want between %v and %v", dockerStopGrace, took, dockerStopGrace, dockerStopGrace+dockerStopSlack)
	}
	if got := e.inspect(t, ctx, id, "{{.State.Status}} {{.State.ExitCode}}"); got != "exited 137" {
		t.Errorf("after docker stop: status and exit code %q, want \"exited 137\"", got)
	}
	if harness.PidExists(newPid) {
		t.Errorf("the stopped container's init (pid %d) still exists", newPid)
	}

	running := e.dockerOK(t, ctx, e.runArgs(harness.Runtime(), "-d", e.image, "sleep", "1000")...)
	e.dockerOK(t, ctx, "rm", "-f", id, running)
	e.expectGone(t, ctx, id, running)
}

// memUsage is docker stats' MEM USAGE / LIMIT column with a non-zero usage.
var memUsage = regexp.MustCompile(`^[0-9.]*[1-9][0-9.]*[KMG]?i?B / [0-9.]+[KMGT]?i?B$`)

// `docker run -it` under a real terminal: the container's stdout is a pty of its own, it
// has the size of the CLI's terminal, and the CLI exits with the container's exit code.
func (e *dockerEnv) testTerminal(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	const rows, cols = 29, 97
	out, code := dockerUnderPty(t, ctx, e.k, console.WinSize{Height: rows, Width: cols},
		e.runArgs(harness.Runtime(), "-it", "--rm", e.image, "sh", "-c", waitForSize(rows, cols)+"; tty; stty size; exit 4")...)
	if code != 4 {
		t.Errorf("docker run -it: exit code %d, want 4; terminal output:\n%s", code, out)
	}
	if !ptsLine.MatchString(out) {
		t.Errorf("`tty` in the container did not print /dev/pts/N; terminal output:\n%s", out)
	}
	if !regexp.MustCompile(fmt.Sprintf(`(?m)^%d %d$`, rows, cols)).MatchString(out) {
		t.Errorf("`stty size` in the container did not print \"%d %d\"; terminal output:\n%s", rows, cols, out)
	}
}

// dockerUnderPty runs the docker CLI with a new pseudo-terminal of size ws as its
// controlling terminal, stdin, stdout and stderr, as an interactive user would, and returns
// what it wrote there (without "\r") and its exit code.
func dockerUnderPty(t *testing.T, ctx context.Context, k *harness.Docker, ws console.WinSize, args ...string) (string, int) {
	t.Helper()
	return underPty(t, ctx, k.Cmd(ctx, args...), ws)
}

// tickLine is a line of the live-restore container's output.
var tickLine = regexp.MustCompile(`^tick ([0-9]+)$`)

// dockerTicks parses the container's `docker logs`: the tick numbers in order, and whether
// they run 1, 2, 3... without a gap, a repeat or another line.
func dockerTicks(logs string) (last int, contiguous bool) {
	contiguous = true
	for _, l := range strings.Split(strings.TrimRight(logs, "\n"), "\n") {
		if l == "" {
			continue
		}
		m := tickLine.FindStringSubmatch(l)
		n := -1
		if m != nil {
			n, _ = strconv.Atoi(m[1])
		}
		if n != last+1 {
			contiguous = false
		}
		last = n
	}
	return last, contiguous
}

// A dockerd restart with live-restore (as after an upgrade of the host's Docker): the
// container keeps running under the same shim and init, the new dockerd takes its output
// over where the old one left it (no line lost or repeated), exec works, and the container's
// exit (docker kill, 137) reaches the new dockerd.
func (e *dockerEnv) testLiveRestore(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	const script = `i=0; while :; do i=$((i+1)); echo tick $i; sleep 0.05; done`
	id := e.dockerOK(t, ctx, e.runArgs(harness.Runtime(), "-d", e.image, "sh", "-c", script)...)
	pid := e.inspectPid(t, ctx, id)
	e.expectShimParent(t, id, pid)
	st, _ := harness.ReadProcStat(pid)
	waitFor(t, 10*time.Second, "ticks in docker logs", func() bool {
		out, _, _ := e.docker(t, ctx, "logs", id)
		last, _ := dockerTicks(out)
		return last >= 5
	})

	if err := e.k.Restart(); err != nil {
		t.Fatalf("restart dockerd: %v", err)
	}
	if got := e.inspect(t, ctx, id, "{{.State.Status}} {{.State.Pid}}"); got != fmt.Sprintf("running %d", pid) {
		t.Fatalf("after the dockerd restart: status and pid %q, want \"running %d\"", got, pid)
	}
	if after, _ := harness.ReadProcStat(pid); after.PPid != st.PPid {
		t.Errorf("after the dockerd restart the init's parent is %d, was the shim %d", after.PPid, st.PPid)
	}
	before, _, _ := e.docker(t, ctx, "logs", id)
	mark, _ := dockerTicks(before)
	var logs string
	waitFor(t, 10*time.Second, "new ticks in docker logs after the restart", func() bool {
		logs, _, _ = e.docker(t, ctx, "logs", id)
		last, _ := dockerTicks(logs)
		return last >= mark+10
	})
	if _, ok := dockerTicks(logs); !ok {
		t.Errorf("docker logs across the dockerd restart are not tick 1, 2, 3... without gaps:\n%s", logs)
	}
	if out := e.dockerOK(t, ctx, "exec", id, "echo", "exec-ok"); out != "exec-ok" {
		t.Errorf("docker exec after the dockerd restart: %q, want \"exec-ok\"", out)
	}
	e.dockerOK(t, ctx, "kill", id)
	waitFor(t, 10*time.Second, "the killed container reported exited", func() bool {
		return e.inspect(t, ctx, id, "{{.State.Status}}") == "exited"
	})
	if code := e.inspect(t, ctx, id, "{{.State.ExitCode}}"); code != "137" {
		t.Errorf("after docker kill: exit code %s, want 137", code)
	}
	e.dockerOK(t, ctx, "rm", id)
	e.expectGone(t, ctx, id)
}

// dockerChurnRuns `docker run --rm ... true` in a row, each exiting 0, then nothing is left
// of any container of the dockerd: no container listed, no shim process, no mount under
// containerd's or dockerd's directories, no runc state, no bundle, no shim socket, no
// cgroup below dockerd's cgroup parent.
func (e *dockerEnv) testChurn(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cidDir := t.TempDir()
	begin := time.Now()
	var ids []string
	for i := range dockerChurnRuns {
		cidFile := filepath.Join(cidDir, strconv.Itoa(i))
		out, errOut, code := e.docker(t, ctx, e.runArgs(harness.Runtime(), "--rm", "--cidfile", cidFile, e.image, "true")...)
		if code != 0 {
			t.Fatalf("run %d of %d: exit code %d\nstdout: %s\nstderr: %s", i+1, dockerChurnRuns, code, out, errOut)
		}
		id, err := os.ReadFile(cidFile)
		if err != nil {
			t.Fatalf("run %d: %v", i+1, err)
		}
		ids = append(ids, string(id))
	}
	t.Logf("%d docker run --rm in %v", dockerChurnRuns, time.Since(begin).Round(time.Millisecond))
	if all, err := e.k.Containers(ctx); err != nil || len(all) > 0 {
		t.Errorf("docker ps -a after the runs: %v (error %v), want none", all, err)
	}
	e.expectGone(t, ctx, ids...)
}
