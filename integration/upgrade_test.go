package integration

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/oci"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/example/containerd-shim-example-v2/integration/direct"
	"github.com/example/containerd-shim-example-v2/integration/harness"
)

// upgradeBuildVersion names the second build the upgrade tests switch to.
const upgradeBuildVersion = "upgrade-b"

var (
	secondBuildOnce sync.Once
	secondBuildDir  string // made by secondShimBuild; TestMain removes it
	secondBuild     string
	secondBuildErr  error
)

// removeSecondShimBuild removes the second build's directory, if one was made.
func removeSecondShimBuild() {
	if secondBuildDir != "" {
		os.RemoveAll(secondBuildDir)
	}
}

// secondShimBuild builds the shim again with another version string, once per test run
// (under a directory of the same binary name, as an install would put it). $UPGRADE_SHIM_B
// names one built beforehand (with launch.Version=upgrade-b), for the cgroup v2 guest,
// which has no Go build cache of its own. It skips the test for another runtime under test:
// the in-place upgrade is a feature of this shim only.
func secondShimBuild(t *testing.T) string {
	t.Helper()
	if harness.Runtime() != "io.example.v2" {
		t.Skipf("in-place upgrade is a feature of io.example.v2, not of %s", harness.Runtime())
	}
	if p := os.Getenv("UPGRADE_SHIM_B"); p != "" {
		return p
	}
	secondBuildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "ex-upgrade-build-")
		if err != nil {
			secondBuildErr = err
			return
		}
		secondBuildDir = dir
		out := filepath.Join(dir, harness.ShimBinaryName)
		cmd := exec.Command("go", "build", "-trimpath", "-ldflags",
			"-s -w -X github.com/example/containerd-shim-example-v2/launch.Version="+upgradeBuildVersion, "-o", out, "./cmd/shim")
		cmd.Dir = ".."
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if b, err := cmd.CombinedOutput(); err != nil {
			secondBuildErr = fmt.Errorf("build the second shim: %v\n%s", err, b)
			return
		}
		secondBuild = out
	})
	if secondBuildErr != nil {
		t.Skipf("no second build of the shim (needs the Go toolchain and the source at ..): %v", secondBuildErr)
	}
	return secondBuild
}

// upgradeShim runs the operator command against one daemon.
func upgradeShim(t *testing.T, ctx context.Context, args ...string) (string, error) {
	t.Helper()
	cmd := exec.CommandContext(ctx, harness.ShimUnderTest(), append([]string{"upgrade"}, args...)...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func shimAddress(t *testing.T, d *harness.Daemon, ns, id string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(d.BundleDir(ns, id), "address"))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// upgradeHold is how long each switch holds everything paused in these tests (the
// command's -test-hold), so that an exit and a request land in the middle of it.
const upgradeHold = 700 * time.Millisecond

// catLogger writes a binary:// logger that appends what the process writes to stdout to
// a file; it returns the logger and the file.
func catLogger(t *testing.T) (logger, out string) {
	t.Helper()
	dir := t.TempDir()
	logger, out = filepath.Join(dir, "logger"), filepath.Join(dir, "logger.out")
	if err := os.WriteFile(logger, []byte("#!/bin/sh\nexec 5>&-\ncat <&3 >> "+out+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return logger, out
}

// The in-place upgrade (issue 14), end to end: one shim holding a group of containers
// (a paced stream, stdin, an exec in flight, a long runner) is upgraded to another build
// and back. During each switch a container is killed and a request is sent. The shim keeps
// its pid; containerd never sees it disconnect; every byte of output arrives once and in
// order; stdin written before, between and after arrives; every exit is reported once with
// its code; the request sent during the switch is answered; introspection names the new
// build and counts the upgrades. A binary that cannot take over is refused and changes
// nothing.
func TestUpgradeInPlace(t *testing.T) {
	newBin := secondShimBuild(t)
	forEachFlavor(t, func(t *testing.T, d *harness.Daemon) { testUpgradeInPlace(t, d, newBin) })
}

func testUpgradeInPlace(t *testing.T, d *harness.Daemon, newBin string) {
	ctx, ns := d.NewNamespace(t)
	ctx, cancel := context.WithTimeout(ctx, 120*time.Second)
	defer cancel()
	logStart := d.LogSize()
	group := oci.WithAnnotations(map[string]string{ownGroupAnnotation(): "up-" + harness.RandID(6)})
	events := subscribeTaskEvents(t, ctx, d, ns)

	// The long runner, first: its bundle names the group's shim.
	sleeper := newContainer(t, ctx, d, "sleeper", []string{"sleep", "100000"}, group)
	sleepTask, sleepExit := startTask(t, ctx, sleeper, cio.NullIO)
	defer sleepTask.Delete(context.WithoutCancel(ctx), containerd.WithProcessKill)
	addr := shimAddress(t, d, ns, "sleeper")
	before := introspect(t, d.BundleDir(ns, "sleeper"))

	// A stream that runs until told to stop (SIGTERM; 50 ms pauses every 1000 lines), so
	// that it crosses both switches however fast the machine is; its last line counts the
	// others.
	streamer := newContainer(t, ctx, d, "stream", []string{"sh", "-c",
		`trap 'stop=1' TERM; i=0; while [ -z "$stop" ]; do echo line-$i; i=$((i+1)); case $i in *000) sleep 0.05;; esac; done; echo end-$i`}, group)
	sio, sout, _ := bufferedIO(d)
	streamTask, streamExit := startTask(t, ctx, streamer, sio)
	defer streamTask.Delete(context.WithoutCancel(ctx), containerd.WithProcessKill)

	// stdin, written before, between and after.
	catCtr := newContainer(t, ctx, d, "cat", []string{"cat"}, group)
	inR, inW := io.Pipe()
	var catOut lockedBuffer
	catTask, catExit := startTask(t, ctx, catCtr, cio.NewCreator(cio.WithStreams(inR, &catOut, nil), cio.WithFIFODir(d.FIFODir)))
	defer catTask.Delete(context.WithoutCancel(ctx), containerd.WithProcessKill)
	inW.Write([]byte("before\n"))
	waitFor(t, 10*time.Second, "cat's first line", func() bool { return catOut.String() == "before\n" })

	// A terminal: its size set before, read after the switches.
	ttyCtr := newContainer(t, ctx, d, "tty", []string{"sh", "-c", "read x; stty size; echo got-$x; read y; echo got-$y"}, group, oci.WithTTY)
	ttyIn, ttyInW := io.Pipe()
	var ttyOut lockedBuffer
	ttyTask, ttyExit := startTask(t, ctx, ttyCtr, cio.NewCreator(cio.WithStreams(ttyIn, &ttyOut, nil), cio.WithTerminal, cio.WithFIFODir(d.FIFODir)))
	defer ttyTask.Delete(context.WithoutCancel(ctx), containerd.WithProcessKill)
	if err := ttyTask.Resize(ctx, 91, 31); err != nil {
		t.Fatal(err)
	}

	// A file:// log and a binary:// logger, written to across both switches.
	logFile := filepath.Join(t.TempDir(), "logged.log")
	paced := []string{"sh", "-c", `i=0; while [ $i -lt 40 ]; do echo log-$i; i=$((i+1)); sleep 0.1; done`}
	fileCtr := newContainer(t, ctx, d, "filelog", paced, group)
	fileTask, fileExit := startTask(t, ctx, fileCtr, cio.LogFile(logFile))
	defer fileTask.Delete(context.WithoutCancel(ctx), containerd.WithProcessKill)
	logger, loggerOut := catLogger(t)
	binCtr := newContainer(t, ctx, d, "binlog", paced, group)
	binTask, binExit := startTask(t, ctx, binCtr, cio.BinaryIO(logger, nil))
	defer binTask.Delete(context.WithoutCancel(ctx), containerd.WithProcessKill)
	// The same with a terminal (nerdctl's `run -dt` logs this way): the pty's output goes to
	// the log or the logger.
	ttyLogFile := filepath.Join(t.TempDir(), "tty-logged.log")
	ttyLogURI, err := cio.LogURIGenerator("file", ttyLogFile, nil)
	if err != nil {
		t.Fatal(err)
	}
	ttyFileCtr := newContainer(t, ctx, d, "ttyfilelog", paced, group, oci.WithTTY)
	ttyFileTask, ttyFileExit := startTask(t, ctx, ttyFileCtr, cio.TerminalLogURI(ttyLogURI))
	defer ttyFileTask.Delete(context.WithoutCancel(ctx), containerd.WithProcessKill)
	ttyLogger, ttyLoggerOut := catLogger(t)
	ttyBinCtr := newContainer(t, ctx, d, "ttybinlog", paced, group, oci.WithTTY)
	ttyBinTask, ttyBinExit := startTask(t, ctx, ttyBinCtr, cio.TerminalBinaryIO(ttyLogger, nil))
	defer ttyBinTask.Delete(context.WithoutCancel(ctx), containerd.WithProcessKill)

	// A container that runs out of memory only after both switches: the new binary's OOM
	// watch must report it.
	hog := newContainer(t, ctx, d, "hog", []string{"sh", "-c", `until [ -e /tmp/go ]; do sleep 0.05; done; sleep 1; x=aaaaaaaa; while :; do x="$x$x"; done`},
		group, oci.WithMemoryLimit(32<<20))
	hogTask, hogExit := startTask(t, ctx, hog, cio.NullIO)
	defer hogTask.Delete(context.WithoutCancel(ctx), containerd.WithProcessKill)

	// A binary that cannot take over is refused; nothing changes.
	broken := filepath.Join(t.TempDir(), harness.ShimBinaryName)
	if err := os.WriteFile(broken, []byte("#!/bin/sh\nexit 1\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := upgradeShim(t, ctx, "-address", addr, "-binary", broken); err == nil || !strings.Contains(out, "not upgraded") {
		t.Fatalf("upgrade to a broken binary: %v\n%s", err, out)
	}
	// A binary that answers but cannot read this daemon's state (a newer layout only, or
	// an older build: a downgrade past a layout change) is refused too.
	other := filepath.Join(t.TempDir(), harness.ShimBinaryName)
	if err := os.WriteFile(other, []byte(`#!/bin/sh
echo '{"version":"from-the-future","revision":"x","minStateVersion":99,"stateVersion":99}'
`), 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := upgradeShim(t, ctx, "-address", addr, "-binary", other); err == nil || !strings.Contains(out, "state layouts 99 to 99") {
		t.Fatalf("upgrade to a binary of another state layout: %v\n%s", err, out)
	}
	if snap := introspect(t, d.BundleDir(ns, "sleeper")); snap.Version != before.Version || snap.Upgrade.Count != 0 {
		t.Fatalf("after refused upgrades: version %q, %d upgrades", snap.Version, snap.Upgrade.Count)
	}

	// An exec that lives through both switches, killed afterwards: the signal goes through
	// the pidfd handed over.
	longProc, err := sleepTask.Exec(ctx, "long", execSpec(t, ctx, sleepTask, "sleep", "100001"), cio.NullIO)
	if err != nil {
		t.Fatal(err)
	}
	longExit := startProc(t, ctx, "exec long", longProc)

	var victims []containerd.Task
	for round, bin := range []string{newBin, harness.ShimUnderTest()} {
		// An exec in flight across the switch, and a container that dies in it.
		execID := fmt.Sprintf("e%d", round)
		execProc, err := sleepTask.Exec(ctx, execID, execSpec(t, ctx, sleepTask, "sh", "-c", "sleep 1; echo exec-out; exit 7"),
			cio.NewCreator(cio.WithStreams(nil, io.Discard, nil), cio.WithFIFODir(d.FIFODir)))
		if err != nil {
			t.Fatal(err)
		}
		execExit := startProc(t, ctx, "exec "+execID, execProc)
		victimID := fmt.Sprintf("victim%d", round)
		victim := newContainer(t, ctx, d, victimID, []string{"sleep", "100000"}, group)
		victimTask, victimExit := startTask(t, ctx, victim, cio.NullIO)
		defer victimTask.Delete(context.WithoutCancel(ctx), containerd.WithProcessKill)
		victims = append(victims, victimTask)
		if st, err := streamTask.Status(ctx); err != nil || st.Status != containerd.Running {
			t.Fatalf("round %d: the stream is %v (%v) before the switch: it must cross it", round, st.Status, err)
		}

		upgraded := startHeldUpgrade(t, ctx, d, addr, bin)
		if err := syscall.Kill(int(victimTask.Pid()), syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		stateStart := time.Now()
		st, err := sleepTask.Status(ctx) // waits for the new binary
		if err != nil || st.Status != containerd.Running {
			t.Errorf("round %d: status during the switch: %v, %v", round, st.Status, err)
		}
		waitedFor := time.Since(stateStart)
		if waitedFor < upgradeHold/4 {
			t.Errorf("round %d: a request sent inside the hold was answered after %v: it should wait for the switch to end", round, waitedFor)
		}
		r := <-upgraded
		if r.err != nil {
			t.Fatalf("round %d: upgrade: %v\n%s", round, r.err, r.out)
		}
		t.Logf("round %d: %s; a request sent during the switch waited %v", round, strings.TrimSpace(r.out), waitedFor.Round(time.Millisecond))
		snap := introspect(t, d.BundleDir(ns, "sleeper"))
		wantVersion := before.Version
		if round == 0 {
			wantVersion = upgradeBuildVersion
		}
		if snap.Pid != before.Pid || snap.Version != wantVersion || snap.Upgrade.Count != round+1 {
			t.Fatalf("round %d: pid %d version %q upgrades %d; want pid %d, %s, %d", round, snap.Pid, snap.Version, snap.Upgrade.Count, before.Pid, wantVersion, round+1)
		}
		// What the previous binary handed over is close-on-exec again: no
		// descriptor of the daemon leaks into the runtime's processes.
		if leaks, err := direct.InheritableFDs(snap.Pid); err != nil || len(leaks) > 0 {
			t.Errorf("round %d: the upgraded daemon's descriptors without close-on-exec: %s (%v)", round, strings.Join(leaks, "; "), err)
		}
		if code := exitCode(t, ctx, victimExit); code != 137 {
			t.Errorf("round %d: the container killed during the switch exited %d, want 137", round, code)
		}
		if code := exitCode(t, ctx, execExit); code != 7 {
			t.Errorf("round %d: exec exited %d, want 7", round, code)
		}
		inW.Write([]byte(fmt.Sprintf("round%d\n", round)))
		ttyInW.Write([]byte(fmt.Sprintf("tty%d\n", round)))
		waitFor(t, 10*time.Second, "the terminal's answer", func() bool { return strings.Contains(ttyOut.String(), fmt.Sprintf("got-tty%d", round)) })
	}
	// The first victim went through the second switch stopped, not deleted: its
	// cgroup is still there (the runtime removes it at delete), and so are its stats.
	if _, err := victims[0].Metrics(ctx); err != nil {
		t.Errorf("stats of a stopped container after an upgrade: %v", err)
	}
	for name, c := range map[string]<-chan containerd.ExitStatus{"filelog": fileExit, "binlog": binExit, "ttyfilelog": ttyFileExit, "ttybinlog": ttyBinExit} {
		if code := exitCode(t, ctx, c); code != 0 {
			t.Errorf("%s exited %d, want 0", name, code)
		}
	}
	var wantLog strings.Builder
	for i := 0; i < 40; i++ {
		fmt.Fprintf(&wantLog, "log-%d\n", i)
	}
	waitFor(t, 10*time.Second, "the logs", func() bool {
		a, _ := os.ReadFile(logFile)
		b, _ := os.ReadFile(loggerOut)
		return len(a) >= wantLog.Len() && len(b) >= wantLog.Len()
	})
	for _, f := range []string{logFile, loggerOut} {
		if b, _ := os.ReadFile(f); string(b) != wantLog.String() {
			t.Errorf("%s: %q, want log-0 to log-39 once each", filepath.Base(f), b)
		}
	}
	// Through a terminal each line ends in CR LF.
	wantTTYLog := strings.ReplaceAll(wantLog.String(), "\n", "\r\n")
	waitFor(t, 10*time.Second, "the terminals' logs", func() bool {
		a, _ := os.ReadFile(ttyLogFile)
		b, _ := os.ReadFile(ttyLoggerOut)
		return len(a) >= len(wantTTYLog) && len(b) >= len(wantTTYLog)
	})
	for _, f := range []string{ttyLogFile, ttyLoggerOut} {
		if b, _ := os.ReadFile(f); string(b) != wantTTYLog {
			t.Errorf("behind a terminal, %s: %q, want log-0 to log-39 once each", filepath.Base(f), b)
		}
	}
	if code := exitCode(t, ctx, ttyExit); code != 0 {
		t.Errorf("tty exited %d, want 0", code)
	}
	if got := ttyOut.String(); !strings.Contains(got, "31 91") {
		t.Errorf("the terminal lost its size across the upgrade: %q", got)
	}

	inW.Write([]byte("after\n"))
	inW.Close()
	if err := catTask.CloseIO(ctx, containerd.WithStdinCloser); err != nil {
		t.Fatal(err)
	}
	if code := exitCode(t, ctx, catExit); code != 0 {
		t.Errorf("cat exited %d, want 0", code)
	}
	// The exit comes by containerd's event, the echo through the FIFO and the
	// client's copy into catOut: either may arrive first.
	const catWant = "before\nround0\nround1\nafter\n"
	if !eventually(ioDrainTimeout, func() bool { return catOut.String() == catWant }) {
		t.Errorf("cat echoed %q, want %q", catOut.String(), catWant)
	}
	if err := streamTask.Kill(ctx, syscall.SIGTERM); err != nil {
		t.Fatalf("stop the stream: %v", err)
	}
	if code := exitCode(t, ctx, streamExit); code != 0 {
		t.Errorf("stream exited %d, want 0", code)
	}
	waitFor(t, ioDrainTimeout, "the stream's last line", func() bool { return strings.HasSuffix(sout.String(), "\n") && strings.Contains(sout.String(), "end-") })
	got := sout.String()
	var lines int
	if i := strings.LastIndex(got, "end-"); i < 0 {
		t.Errorf("stream: %d bytes, no last line", len(got))
	} else if _, err := fmt.Sscanf(got[i:], "end-%d\n", &lines); err != nil {
		t.Errorf("stream: last line %q: %v", got[i:], err)
	} else if want := streamText(lines) + fmt.Sprintf("end-%d\n", lines); got != want {
		t.Errorf("stream: %d bytes, want %d (%s)", len(got), len(want), firstDifference(got, want))
	} else {
		t.Logf("stream: %d lines (%d bytes) across both switches, each once and in order", lines, len(got))
	}
	if err := longProc.Kill(ctx, syscall.SIGKILL); err != nil {
		t.Fatalf("kill the exec started before the switches: %v", err)
	}
	if code := exitCode(t, ctx, longExit); code != 137 {
		t.Errorf("exec long exited %d, want 137", code)
	}
	if code := runExec(t, ctx, hogTask, "go", "touch", "/tmp/go"); code != 0 {
		t.Fatalf("exec in hog: %d", code)
	}
	if code := exitCode(t, ctx, hogExit); code != 137 {
		t.Errorf("hog exited %d, want 137 (the OOM killer)", code)
	}
	if err := sleepTask.Kill(ctx, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if code := exitCode(t, ctx, sleepExit); code != 137 {
		t.Errorf("sleeper exited %d, want 137", code)
	}

	// Every exit once.
	exits, ooms := map[string]int{}, map[string]int{}
	events.collect(t, 10*time.Second, "the sleeper's exit", func(e taskEvent) bool {
		if x, ok := e.Event.(interface{ GetContainerID() string }); ok && e.Topic == "/tasks/oom" {
			ooms[x.GetContainerID()]++
		}
		if x, ok := e.Event.(interface{ GetID() string }); ok && e.Topic == "/tasks/exit" {
			exits[x.GetID()]++
			return x.GetID() == "sleeper"
		}
		return false
	})
	if ooms["hog"] != 1 || len(ooms) != 1 {
		t.Errorf("OOM events %v, want one for hog (the OOM watch survives the upgrades)", ooms)
	}
	for _, id := range []string{"victim0", "victim1", "e0", "e1", "cat", "stream", "tty", "filelog", "binlog", "ttyfilelog", "ttybinlog", "hog", "go", "long", "sleeper"} {
		if exits[id] != 1 {
			t.Errorf("exit events: %v, want one for %s", exits, id)
		}
	}
	if log := d.LogSince(logStart, 1<<20); strings.Contains(log, "shim disconnected") {
		t.Errorf("containerd saw the shim disconnect:\n%s", log)
	}
}

// upgradeResult is what the upgrade command printed, and how it ended.
type upgradeResult struct {
	out string
	err error
}

// startHeldUpgrade runs the upgrade command against the daemon at addr with
// the test hold, and returns once the switch holds (see waitForHold); the
// command's result comes on the channel.
func startHeldUpgrade(t *testing.T, ctx context.Context, d *harness.Daemon, addr, bin string) <-chan upgradeResult {
	t.Helper()
	res := make(chan upgradeResult, 1)
	logAt := d.LogSize()
	go func() {
		out, err := upgradeShim(t, ctx, "-address", addr, "-binary", bin, "-test-hold", upgradeHold.String())
		res <- upgradeResult{out, err}
	}()
	waitForHold(t, d, logAt)
	return res
}

// holdLogLine is what the shim logs when a switch begins its test hold
// (upgrade.HoldLogLine; this module does not import the shim's).
const holdLogLine = "everything paused, test hold begins"

// waitForHold waits until the daemon's log, from offset on, says a switch has
// paused everything and holds (the shim logs it when -test-hold is given and
// containerd copies the shim's log into its own), so that what the test does
// next lands inside the switch.
func waitForHold(t *testing.T, d *harness.Daemon, offset int64) {
	t.Helper()
	deadline := time.Now().Add(upgradeHold * 10)
	for !strings.Contains(d.LogSince(offset, 1<<20), holdLogLine) {
		if time.Now().After(deadline) {
			t.Fatalf("the switch did not begin its hold within %v; containerd's log since:\n%s", upgradeHold*10, d.LogSince(offset, 8<<10))
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func streamText(n int) string {
	var b strings.Builder
	for i := 0; i < n; i++ {
		fmt.Fprintf(&b, "line-%d\n", i)
	}
	return b.String()
}

func firstDifference(got, want string) string {
	for i := 0; i < len(got) && i < len(want); i++ {
		if got[i] != want[i] {
			lo := max(0, i-20)
			return fmt.Sprintf("first difference at byte %d: %q vs %q", i, got[lo:min(len(got), i+20)], want[lo:min(len(want), i+20)])
		}
	}
	return "one is a prefix of the other"
}

// `upgrade --all` over the live shims of the test's containerd (its own: not
// those of a test run beside it, nor the direct harness's), there and back: a 10-container
// pod-like group, a single-container shim, a terminal task's shim, a shim whose task (with a
// terminal) is created and not started, and a shim whose task writes its output to a plain
// file (a stdio path naming a regular file; a downgrade to layout 8 is refused for it first)
// are upgraded (their pauses are reported). All
// their containers keep running and stop with the right codes, the created task starts after
// both switches, and the plain file has every line written across them once, in order.
func TestUpgradeAll(t *testing.T) {
	newBin := secondShimBuild(t)
	forEachFlavor(t, func(t *testing.T, d *harness.Daemon) {
		ctx, ns := d.NewNamespace(t)
		ctx, cancel := context.WithTimeout(ctx, 120*time.Second)
		defer cancel()
		group := oci.WithAnnotations(map[string]string{ownGroupAnnotation(): "pod-" + harness.RandID(6)})
		type running struct {
			id   string
			task containerd.Task
			exit <-chan containerd.ExitStatus
		}
		var all []running
		start := func(id string, ioc cio.Creator, opts ...oci.SpecOpts) {
			ctr := newContainer(t, ctx, d, id, []string{"sleep", "100000"}, opts...)
			task, exit := startTask(t, ctx, ctr, ioc)
			t.Cleanup(func() { task.Delete(context.WithoutCancel(ctx), containerd.WithProcessKill) })
			all = append(all, running{id, task, exit})
		}
		for i := 0; i < 10; i++ {
			start(fmt.Sprintf("pod%d", i), cio.NullIO, group)
		}
		start("single", cio.NullIO)
		start("tty", cio.NewCreator(cio.WithStreams(nil, io.Discard, nil), cio.WithTerminal, cio.WithFIFODir(d.FIFODir)), oci.WithTTY)
		// Created with a terminal, started only after both switches: its pty goes over twice
		// before the process writes to it.
		created := newContainer(t, ctx, d, "created", []string{"sh", "-c", "echo created-then-started"}, oci.WithTTY)
		var createdOut lockedBuffer
		createdTask, err := created.NewTask(ctx, cio.NewCreator(cio.WithStreams(nil, &createdOut, nil), cio.WithTerminal, cio.WithFIFODir(d.FIFODir)))
		if err != nil {
			t.Fatal(err)
		}
		defer createdTask.Delete(context.WithoutCancel(ctx), containerd.WithProcessKill)
		// Output to a plain file (a stdio path naming a regular file, not a FIFO, as a
		// tool driving the shim may give), both streams appended to it, a line every
		// 10 ms across both switches.
		plainOut := filepath.Join(t.TempDir(), "plain.out")
		if err := os.WriteFile(plainOut, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		start("plain", fixedFIFOs(cio.Config{Stdout: plainOut, Stderr: plainOut}),
			oci.WithProcessArgs("sh", "-c", "i=0; while :; do echo line-$i; i=$((i+1)); sleep 0.01; done"))
		before := map[string]introspection{}
		for _, id := range []string{"pod0", "single", "tty", "created", "plain"} {
			before[id] = introspect(t, d.BundleDir(ns, id))
		}

		// A build of the layout before (8, which took no plain file over) is refused for
		// the plain file's shim once its state is known, the file named; the shim serves
		// on with its binary (checked below: it is upgraded by --all).
		layout8 := filepath.Join(t.TempDir(), harness.ShimBinaryName)
		if err := os.WriteFile(layout8, []byte(`#!/bin/sh
echo '{"version":"layout-8","revision":"x","minStateVersion":1,"stateVersion":8}'
`), 0o755); err != nil {
			t.Fatal(err)
		}
		if out, err := upgradeShim(t, ctx, "-address", shimAddress(t, d, ns, "plain"), "-binary", layout8); err == nil ||
			!strings.Contains(out, "kept its binary") || !strings.Contains(out, "stdout goes to a plain file") {
			t.Errorf("a downgrade to layout 8 with a plain file's output: %v\n%s", err, out)
		}

		out, err := upgradeShim(t, ctx, "--all", "-containerd-address", d.Address, "-binary", newBin)
		t.Logf("upgrade --all:\n%s", out)
		if err != nil {
			t.Errorf("upgrade --all: %v", err)
		}
		// Its containerd's five shims, no other: a shim of another daemon
		// (another test run's) upgraded here would switch under that test.
		if lines := strings.Count(out, "pid "); lines != 5 || strings.Contains(out, "not upgraded") {
			t.Errorf("upgrade --all upgraded %d daemons, want this containerd's 5, none refused", lines)
		}
		for id, want := range map[string]string{"pod0": upgradeBuildVersion, "single": upgradeBuildVersion, "tty": upgradeBuildVersion, "created": upgradeBuildVersion, "plain": upgradeBuildVersion} {
			snap := introspect(t, d.BundleDir(ns, id))
			if snap.Pid != before[id].Pid || snap.Version != want {
				t.Errorf("%s's shim: pid %d version %q, want pid %d version %q", id, snap.Pid, snap.Version, before[id].Pid, want)
			}
			if id == "pod0" {
				t.Logf("10-container shim: pause %.1f ms", float64(snap.Upgrade.PauseUs)/1000)
			}
		}
		// And back: a second --all to the build under test.
		out, err = upgradeShim(t, ctx, "--all", "-containerd-address", d.Address, "-binary", harness.ShimUnderTest())
		t.Logf("second upgrade --all:\n%s", out)
		if err != nil {
			t.Errorf("the second upgrade --all: %v", err)
		}
		for id, want := range map[string]string{"pod0": before["pod0"].Version, "single": before["single"].Version, "tty": before["tty"].Version, "created": before["created"].Version, "plain": before["plain"].Version} {
			if snap := introspect(t, d.BundleDir(ns, id)); snap.Pid != before[id].Pid || snap.Version != want || snap.Upgrade.Count != 2 {
				t.Errorf("%s's shim after the second --all: pid %d version %q upgrades %d, want pid %d version %q, 2",
					id, snap.Pid, snap.Version, snap.Upgrade.Count, before[id].Pid, want)
			}
		}
		// The plain file's writer goes on after both switches: its lines so far, and
		// more to come before it is killed (a fast runtime gets both switches done
		// within a few of its lines).
		afterSwitches := numberedLines(t, plainOut)
		waitFor(t, 10*time.Second, "lines in the plain file after both switches", func() bool {
			return numberedLines(t, plainOut) >= afterSwitches+5
		})
		// The task created before both switches starts, and its exit is reported.
		createdExit, err := createdTask.Wait(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := createdTask.Start(ctx); err != nil {
			t.Fatalf("start the task created before both switches: %v", err)
		}
		if code := exitCode(t, ctx, createdExit); code != 0 {
			t.Errorf("the task created before both switches exited %d, want 0", code)
		}
		waitFor(t, 10*time.Second, "the created task's output through its terminal", func() bool {
			return strings.Contains(createdOut.String(), "created-then-started")
		})
		for _, r := range all {
			expectRunning(t, ctx, r.task, "after upgrade --all")
			if err := r.task.Kill(ctx, syscall.SIGKILL); err != nil {
				t.Fatalf("kill %s: %v", r.id, err)
			}
			if code := exitCode(t, ctx, r.exit); code != 137 {
				t.Errorf("%s exited %d, want 137", r.id, code)
			}
		}
		t.Logf("%s: %d lines, each once, in order (%d when both switches were done)", plainOut, numberedLines(t, plainOut), afterSwitches)
	})
}

// numberedLines checks that the file at path holds line-0, line-1, ... each
// once, in order (a last line still being written aside), and returns how
// many whole lines it has.
func numberedLines(t *testing.T, path string) int {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(b), "\n")
	lines = lines[:len(lines)-1] // after the last newline: "" or a line not yet whole
	for i, l := range lines {
		if l != fmt.Sprintf("line-%d", i) {
			t.Fatalf("%s: line %d is %q, want line-%d: a line lost, repeated or cut", path, i, l, i)
		}
	}
	return len(lines)
}

// A pod of the Sandbox API (containerd 2.x, sandboxer = "shim") across an in-place upgrade
// to a build installed over the shim's binary (the command names none): the pod stays ready with the same holder and pod IP, its container keeps running and runs
// ExecSync, a second container joins the pod's namespaces after the switch, and the pod
// stops and is removed leaving nothing behind.
func TestUpgradeSandboxPod(t *testing.T) {
	newBin := secondShimBuild(t)
	d, cri := harness.StartCRIDaemon(t, harness.Flavor2x, harness.WithPodNetwork(), harness.WithShimSandboxer())
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	logStart := d.LogSize()
	spec := &shimPodSpec{name: "uppod-" + harness.RandID(6)}
	pod, _ := runShimPod(t, ctx, d, cri, spec)
	before := podStatus(t, ctx, cri, pod.id)
	holder := holderOf(t, pod.id)
	first, _ := startCRISleeper(t, ctx, cri, pod, "first", 100001)
	netns := nsOf(t, holder, "net")
	addrBytes, err := os.ReadFile(filepath.Join(d.SandboxBundleDir(harness.CRINamespace, pod.id), "address"))
	if err != nil {
		t.Fatal(err)
	}
	// As an operator rolls a fix: install the new build where the shim was started from
	// (a rename over it, as `install` does), then upgrade without naming a binary.
	installed := filepath.Join(d.BinDir, harness.ShimBinaryName)
	b, err := os.ReadFile(newBin)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(installed+".new", b, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(installed+".new", installed); err != nil {
		t.Fatal(err)
	}
	out, err := upgradeShim(t, ctx, "-address", strings.TrimSpace(string(addrBytes)))
	if err != nil {
		t.Fatalf("upgrade: %v\n%s", err, out)
	}
	t.Logf("upgrade: %s", strings.TrimSpace(out))
	if !strings.Contains(out, "-> "+upgradeBuildVersion) || !strings.Contains(out, "("+installed+")") {
		t.Errorf("upgrade said %q, want the build installed at %s", out, installed)
	}

	after := podStatus(t, ctx, cri, pod.id)
	if after.State != runtimeapi.PodSandboxState_SANDBOX_READY || after.GetNetwork().GetIp() != before.GetNetwork().GetIp() {
		t.Fatalf("after the upgrade: pod %v with IP %q, want ready with %q", after.State, after.GetNetwork().GetIp(), before.GetNetwork().GetIp())
	}
	if h := holderOf(t, pod.id); h != holder {
		t.Fatalf("holder %d after the upgrade, want %d", h, holder)
	}
	if got := execOut(t, ctx, cri, first, "echo", "still-here"); got != "still-here\n" {
		t.Errorf("ExecSync after the upgrade: %q", got)
	}
	second, pid2 := startCRISleeper(t, ctx, cri, pod, "second", 100002)
	if ns := nsOf(t, pid2, "net"); ns != netns {
		t.Errorf("a container started after the upgrade is in %s, want the pod's %s", ns, netns)
	}
	// Until the teardown below (after which the shim leaves), containerd saw no disconnect.
	if log := d.LogSince(logStart, 1<<20); strings.Contains(log, "shim disconnected") {
		t.Errorf("containerd saw the shim disconnect:\n%s", log)
	}
	for _, id := range []string{first, second} {
		if _, err := cri.Runtime.StopContainer(ctx, &runtimeapi.StopContainerRequest{ContainerId: id, Timeout: 1}); err != nil {
			t.Fatalf("StopContainer %s: %v", id, err)
		}
	}
	if _, err := cri.Runtime.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: pod.id}); err != nil {
		t.Fatalf("StopPodSandbox: %v", err)
	}
	waitFor(t, 5*time.Second, "the holder exits with StopPodSandbox", func() bool { return !harness.PidExists(holder) })
	if _, err := cri.Runtime.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: pod.id}); err != nil {
		t.Fatalf("RemovePodSandbox: %v", err)
	}
	if left := pollLeftovers(10*time.Second, func() []string { return d.SandboxLeftovers(pod.id, spec.cgroupPath) }); len(left) > 0 {
		t.Errorf("left after RemovePodSandbox: %s", strings.Join(left, "; "))
	}
}

// A switch that fails at the very end (the new binary, accepted by its hello, can no longer be
// executed when the daemon gets there) is undone: the daemon serves on with its own binary,
// the request sent during the switch is answered, output flows and exits are reported, the
// command says why the daemon kept its binary, and introspection records it.
func TestUpgradeExecFailureUndone(t *testing.T) {
	newBin := secondShimBuild(t)
	forEachFlavor(t, func(t *testing.T, d *harness.Daemon) {
		ctx, ns := d.NewNamespace(t)
		ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
		defer cancel()
		ctr := newContainer(t, ctx, d, "keeps", []string{"sh", "-c", `i=0; while [ $i -lt 30 ]; do echo line-$i; i=$((i+1)); sleep 0.1; done`})
		ioc, out, _ := bufferedIO(d)
		task, exitC := startTask(t, ctx, ctr, ioc)
		defer task.Delete(context.WithoutCancel(ctx), containerd.WithProcessKill)
		before := introspect(t, d.BundleDir(ns, "keeps"))

		// A copy of the second build that stops being executable during the switch.
		bin := filepath.Join(t.TempDir(), harness.ShimBinaryName)
		b, err := os.ReadFile(newBin)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(bin, b, 0o755); err != nil {
			t.Fatal(err)
		}
		done := startHeldUpgrade(t, ctx, d, shimAddress(t, d, ns, "keeps"), bin)
		if err := os.Chmod(bin, 0o644); err != nil {
			t.Fatal(err)
		}
		st, err := task.Status(ctx) // waits for the switch to end, then is served
		if err != nil || st.Status != containerd.Running {
			t.Errorf("status during the failed switch: %v, %v", st.Status, err)
		}
		r := <-done
		if r.err == nil || !strings.Contains(r.out, "kept its binary") || !strings.Contains(r.out, "permission denied") {
			t.Fatalf("upgrade to a binary that cannot be executed: %v\n%s", r.err, r.out)
		}
		snap := introspect(t, d.BundleDir(ns, "keeps"))
		if snap.Pid != before.Pid || snap.Version != before.Version || snap.Upgrade.Count != 0 || !strings.Contains(snap.Upgrade.LastError, "permission denied") {
			t.Errorf("after the failed switch: pid %d version %q upgrades %d last error %q", snap.Pid, snap.Version, snap.Upgrade.Count, snap.Upgrade.LastError)
		}
		if code := exitCode(t, ctx, exitC); code != 0 {
			t.Errorf("exit %d, want 0", code)
		}
		var want strings.Builder
		for i := 0; i < 30; i++ {
			fmt.Fprintf(&want, "line-%d\n", i)
		}
		waitFor(t, ioDrainTimeout, "the whole output", func() bool { return len(out.String()) >= want.Len() })
		if out.String() != want.String() {
			t.Errorf("output %q, want line-0 to line-29 once each", out.String())
		}
		// And a later upgrade works.
		if o, err := upgradeShim(t, ctx, "-address", shimAddress(t, d, ns, "keeps"), "-binary", newBin); err != nil {
			t.Errorf("upgrade after the failed one: %v\n%s", err, o)
		}
	})
}

// In-place upgrades while a container is held back by a stalled reader in Docker's
// namespace (held, never discarded, past the other namespaces' stall policy): the relay
// blocked on the full client FIFO goes over with its undelivered bytes four times, back and
// forth between two builds, and once the reader reads again every line arrives, in order
// (no gap), and the container goes on. (A CI run beside another run once failed a stall test with
// upgrades in it; the cause was the other run, and this shows the upgrade itself loses
// nothing.)
func TestUpgradeDuringAHeldStallLosesNothing(t *testing.T) {
	newBin := secondShimBuild(t)
	d := daemonFor(t, harness.Flavor2x)
	outDir := t.TempDir() // before the namespace: removed after its cleanup has killed the writer
	ctx, ns := d.NamedNamespace(t, "moby")
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	counterFile := filepath.Join(outDir, "counter")
	writer := newContainer(t, ctx, d, "mb-upgrade-writer", stallWriterArgs,
		oci.WithMounts([]specs.Mount{{Destination: "/out", Type: "bind", Source: outDir, Options: []string{"rbind", "rw"}}}))
	stdout, stderr := outputFIFOs(t, d, "stall-upgrade")
	readFIFO(t, ctx, stderr, io.Discard)
	reader := openSequenceReader(t, ctx, stdout)
	startTask(t, ctx, writer, fixedFIFOs(cio.Config{Stdout: stdout, Stderr: stderr}))
	waitFor(t, 10*time.Second, "the reader receives 2000 lines", func() bool { return reader.last() >= 2000 })

	reader.pause()
	time.Sleep(stallPolicy + 3*time.Second) // held past the policy of other namespaces
	held := readCounter(counterFile)
	addr := shimAddress(t, d, ns, "mb-upgrade-writer")
	for i, pause := range []time.Duration{100 * time.Millisecond, 1700 * time.Millisecond, time.Second, 0} {
		bin := newBin
		if i%2 == 1 {
			bin = harness.ShimUnderTest()
		}
		if out, err := upgradeShim(t, ctx, "-address", addr, "-binary", bin); err != nil {
			t.Fatalf("upgrade %d during the stall: %v\n%s", i+1, err, out)
		}
		time.Sleep(pause)
	}
	// The counter may move by a step here: a relay that was splicing (its buffer empty)
	// reads one buffer's worth into its carry when the next binary starts it, which frees
	// that much of the container's pipe. Those bytes are held, not dropped: the gap check
	// below is what shows that nothing was lost.
	reader.resume()
	waitFor(t, 15*time.Second, "the reader catches up past the held lines", func() bool { return reader.last() > held+500 })
	if n, last := reader.gaps(); n > 0 {
		t.Errorf("%d gaps in the output after the upgrades (last: %s): lines were lost", n, last)
	}
}
