package direct

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	taskv3 "github.com/containerd/containerd/api/runtime/task/v3"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// upgradeHold keeps the daemon paused this long in a switch (the upgrade
// command's -test-hold), so that an exit and a request land inside it.
const upgradeHold = 600 * time.Millisecond

// holdLogLine is what the daemon logs when a held switch has paused
// everything (upgrade.HoldLogLine; this module does not import the shim's).
const holdLogLine = "everything paused, test hold begins"

// waitAnswer is what a Wait sent in the background came back with.
type waitAnswer struct {
	resp *taskv3.WaitResponse
	err  error
}

// waitLater sends a Wait at once and gives its answer on the channel.
func waitLater(ctx context.Context, c *Container, execID string) <-chan waitAnswer {
	ch := make(chan waitAnswer, 1)
	go func() {
		resp, err := c.Task().Wait(ctx, &taskv3.WaitRequest{ID: c.ID, ExecID: execID})
		ch <- waitAnswer{resp, err}
	}()
	return ch
}

// expectWaitExit fails the test unless the background Wait answers with code.
func expectWaitExit(t *testing.T, what string, ch <-chan waitAnswer, code uint32) {
	t.Helper()
	select {
	case a := <-ch:
		if a.err != nil {
			t.Errorf("%s: Wait answered %v (class %q), want exit status %d", what, a.err, ErrClass(a.err), code)
		} else if a.resp.GetExitStatus() != code {
			t.Errorf("%s: Wait answered exit status %d, want %d", what, a.resp.GetExitStatus(), code)
		}
	case <-time.After(WaitTimeout):
		t.Errorf("%s: no answer to Wait within %v", what, WaitTimeout)
	}
}

// expectPending fails the test if the background Wait has answered already.
func expectPending(t *testing.T, what string, ch <-chan waitAnswer) {
	t.Helper()
	select {
	case a := <-ch:
		t.Fatalf("%s: Wait answered before the process exited: %v, %v", what, a.resp, a.err)
	default:
	}
}

// upgradeToSelf upgrades c's daemon in place to the same binary and waits
// until the new binary has logged its nth upgrade.
func upgradeToSelf(t *testing.T, ctx context.Context, c *Container, nth int) {
	t.Helper()
	out, err := exec.CommandContext(ctx, ShimPath(), "upgrade", "-address", c.Shim.Socket, "-binary", ShimPath()).CombinedOutput()
	if err != nil {
		t.Fatalf("upgrade of %s's daemon: %v: %s", c.ID, err, out)
	}
	if n := c.Bundle.WaitShimLogCount("upgraded in place", nth, WaitTimeout); n != nth {
		t.Fatalf("%s's daemon logged %d upgrades, want %d", c.ID, n, nth)
	}
}

// heldUpgrade runs `upgrade` against c's daemon (to the same binary) with
// a hold, returns once the daemon holds, and gives the command's end.
func heldUpgrade(t *testing.T, ctx context.Context, c *Container) <-chan error {
	t.Helper()
	logAt := len(c.Bundle.ShimLog())
	done := make(chan error, 1)
	go func() {
		out, err := exec.CommandContext(ctx, ShimPath(), "upgrade", "-address", c.Shim.Socket,
			"-binary", ShimPath(), "-test-hold", upgradeHold.String()).CombinedOutput()
		if err != nil {
			err = &upgradeError{err: err, out: string(out)}
		}
		done <- err
	}()
	deadline := time.Now().Add(20 * upgradeHold)
	for {
		log := c.Bundle.ShimLog()
		if len(log) < logAt {
			logAt = 0 // the bounded log was cut at its start
		}
		if strings.Contains(log[logAt:], holdLogLine) {
			return done
		}
		select {
		case err := <-done:
			t.Fatalf("the upgrade ended before its hold began: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("the switch did not begin its hold within %v", 20*upgradeHold)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

type upgradeError struct {
	err error
	out string
}

func (e *upgradeError) Error() string { return e.err.Error() + ": " + e.out }

// Waits on execs and on the init across an in-place upgrade, as containerd
// sends them (CRI's ExecSync and `ctr exec` send Wait, then Start, and keep
// the Wait open until the exec exits): each Wait parked in the old binary is
// answered by the new one with the process's exit status, whether the
// process exits during the switch or after it, or has not even started
// when it comes; a Wait sent during the switch is too; an exec that had
// exited and was not deleted answers Wait, State and Delete with its code
// after the switch; and so does an init, across a second switch.
func TestUpgradeWaitsOnExecsAndInit(t *testing.T) {
	t.Parallel()
	forEachAPI(t, testUpgradeWaits)
}

func testUpgradeWaits(t *testing.T, mode Mode) {
	env := NewEnv(t)
	c := env.Run(t, Config{Mode: mode, Name: "upwait", Args: loopArgs, NullIO: true})
	ctx := TestContext(t, 2*time.Minute)
	start(t, ctx, c, "")
	trapped := []string{"sh", "-c", `trap "exit 7" TERM; while :; do sleep 0.1; done`}

	// (c) exited, not deleted.
	addExec(t, ctx, c, "done", []string{"sh", "-c", "exit 3"}, nil)
	start(t, ctx, c, "done")
	if got := wait(t, ctx, c, "done").GetExitStatus(); got != 3 {
		t.Fatalf("exec done: exit status %d, want 3", got)
	}
	// (a) Wait parked on a running exec that exits after the switch.
	addExec(t, ctx, c, "after", trapped, nil)
	afterWait := waitLater(ctx, c, "after")
	start(t, ctx, c, "after")
	// (a) the same, for an exec that dies during the switch.
	addExec(t, ctx, c, "during", loopArgs, nil)
	duringWait := waitLater(ctx, c, "during")
	duringPid := start(t, ctx, c, "during")
	// (a) Wait parked on an exec created, not started yet: Start comes after.
	addExec(t, ctx, c, "unstarted", []string{"sh", "-c", "exit 9"}, nil)
	unstartedWait := waitLater(ctx, c, "unstarted")
	// (d) Wait parked on the init, across both switches.
	initWait := waitLater(ctx, c, "")
	// (b) an exec whose Wait is sent during the switch.
	addExec(t, ctx, c, "late", trapped, nil)
	start(t, ctx, c, "late")
	time.Sleep(100 * time.Millisecond) // the Waits reach the daemon before the pause
	for what, ch := range map[string]<-chan waitAnswer{"after": afterWait, "during": duringWait, "unstarted": unstartedWait, "init": initWait} {
		expectPending(t, "exec "+what, ch)
	}

	done := heldUpgrade(t, ctx, c)
	if err := syscall.Kill(int(duringPid), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	lateWait := waitLater(ctx, c, "late")
	if err := <-done; err != nil {
		t.Fatalf("upgrade: %v", err)
	}

	expectWaitExit(t, "exec during (killed during the switch)", duringWait, 137)
	kill(t, ctx, c, "after", sigTERM)
	expectWaitExit(t, "exec after (exited after the switch)", afterWait, 7)
	kill(t, ctx, c, "late", sigTERM)
	expectWaitExit(t, "exec late (Wait sent during the switch)", lateWait, 7)
	start(t, ctx, c, "unstarted")
	expectWaitExit(t, "exec unstarted (started after the switch)", unstartedWait, 9)

	if got := wait(t, ctx, c, "done").GetExitStatus(); got != 3 {
		t.Errorf("exec done after the switch: Wait says %d, want 3", got)
	}
	if got := state(t, ctx, c, "done").GetExitStatus(); got != 3 {
		t.Errorf("exec done after the switch: State says %d, want 3", got)
	}
	for id, code := range map[string]uint32{"done": 3, "during": 137, "after": 7, "late": 7, "unstarted": 9} {
		if d := deleteTask(t, ctx, c, id); d.GetExitStatus() != code {
			t.Errorf("exec %s: Delete says %d, want %d", id, d.GetExitStatus(), code)
		}
	}

	// (d) the init, stopped and not deleted at a second switch.
	kill(t, ctx, c, "", sigKILL)
	expectWaitExit(t, "init (Wait parked across the first switch)", initWait, 137)
	done = heldUpgrade(t, ctx, c)
	if err := <-done; err != nil {
		t.Fatalf("second upgrade: %v", err)
	}
	// The command ends once introspection counts the upgrade; the new
	// binary logs it just after counting it.
	if n := c.Bundle.WaitShimLogCount("upgraded in place", 2, WaitTimeout); n != 2 {
		t.Fatalf("the daemon logged %d upgrades, want 2", n)
	}
	if got := wait(t, ctx, c, "").GetExitStatus(); got != 137 {
		t.Errorf("init after the second switch: Wait says %d, want 137", got)
	}
	if got := state(t, ctx, c, "").GetExitStatus(); got != 137 {
		t.Errorf("init after the second switch: State says %d, want 137", got)
	}
	if d := deleteTask(t, ctx, c, ""); d.GetExitStatus() != 137 {
		t.Errorf("init: Delete says %d, want 137", d.GetExitStatus())
	}
}

// An exec still running when its container is deleted is killed at the
// delete and its waiters get its exit when it comes (releaseExecs); the
// container is gone from the daemon by then, and only the binary that killed
// the exec can answer them. An upgrade before that exit came would hand
// over neither the exec nor its exit, and the Wait parked on it would be
// answered NotFound by the successor: the upgrade is refused until the exit
// is in, and the Wait gets 137. The exec is kept from dying in a frozen
// cgroup v1 freezer of the test's own (a frozen task takes SIGKILL only once
// thawed); the container has no PID namespace of its own, so its init's
// exit does not wait for the exec.
func TestUpgradeWaitsForAnExecKilledAtItsContainersDelete(t *testing.T) {
	t.Parallel()
	const freezerRoot = "/sys/fs/cgroup/freezer"
	if st, err := os.Stat(freezerRoot); err != nil || !st.IsDir() {
		t.Skip("needs the cgroup v1 freezer (under v2 a frozen task dies of SIGKILL)")
	}
	env := NewEnv(t)
	c := env.Launch(t, Config{Mode: Bootstrap, Name: "upleft", Args: loopArgs, NullIO: true})
	var ns []specs.LinuxNamespace
	for _, n := range c.Bundle.Spec.Linux.Namespaces {
		if n.Type != specs.PIDNamespace {
			ns = append(ns, n)
		}
	}
	c.Bundle.Spec.Linux.Namespaces = ns
	data, err := json.Marshal(c.Bundle.Spec)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(c.Bundle.Dir, SpecFile), data, 0o644); err != nil {
		t.Fatal(err)
	}
	ctx := TestContext(t, 2*time.Minute)
	if err := c.Create(ctx); err != nil {
		t.Fatalf("Create: %v", err)
	}
	start(t, ctx, c, "")

	addExec(t, ctx, c, "left", loopArgs, nil)
	leftWait := waitLater(ctx, c, "left")
	pid := start(t, ctx, c, "left")
	freezer := filepath.Join(freezerRoot, "direct-"+c.ID)
	if err := os.Mkdir(freezer, 0o755); err != nil {
		t.Fatal(err)
	}
	thaw := func() {
		if err := os.WriteFile(filepath.Join(freezer, "freezer.state"), []byte("THAWED"), 0); err != nil {
			t.Errorf("thaw: %v", err)
		}
	}
	t.Cleanup(func() {
		thaw()
		deadline := time.Now().Add(5 * time.Second)
		for os.Remove(freezer) != nil && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
	})
	if err := os.WriteFile(filepath.Join(freezer, "cgroup.procs"), []byte(fmt.Sprint(pid)), 0); err != nil {
		t.Fatal(err)
	}
	// Out of the container's cgroups in the other hierarchies too: runc
	// from 1.2 fails the container's delete while its cgroup still holds
	// a (frozen) process.
	roots, _ := filepath.Glob("/sys/fs/cgroup/*/cgroup.procs")
	for _, procs := range roots {
		if filepath.Dir(procs) == freezerRoot {
			continue
		}
		if err := os.WriteFile(procs, []byte(fmt.Sprint(pid)), 0); err != nil {
			t.Logf("move the exec to %s: %v", procs, err)
		}
	}
	if err := os.WriteFile(filepath.Join(freezer, "freezer.state"), []byte("FROZEN"), 0); err != nil {
		t.Fatal(err)
	}

	// The init's exit waits a while for the exec (5 s), then comes.
	kill(t, ctx, c, "", sigKILL)
	if got := wait(t, ctx, c, "").GetExitStatus(); got != 137 {
		t.Fatalf("init: exit status %d, want 137", got)
	}
	deleteTask(t, ctx, c, "")
	expectPending(t, "exec left (frozen, killed at the delete)", leftWait)

	out, err := exec.CommandContext(ctx, ShimPath(), "upgrade", "-address", c.Shim.Socket, "-binary", ShimPath()).CombinedOutput()
	refused := err != nil
	if !refused {
		t.Errorf("upgraded while an exec killed at its container's delete had not exited: %s", out)
	} else if !strings.Contains(string(out), "not upgraded") || !strings.Contains(string(out), "not exited") {
		t.Errorf("upgrade: %v: %s (want it refused, saying why)", err, out)
	} else {
		t.Logf("refused: %s", strings.TrimSpace(string(out)))
	}
	thaw()
	expectWaitExit(t, "exec left (killed at its container's delete)", leftWait, 137)
	if refused {
		if out, err := exec.CommandContext(ctx, ShimPath(), "upgrade", "-address", c.Shim.Socket, "-binary", ShimPath()).CombinedOutput(); err != nil {
			t.Errorf("upgrade once the exec has exited: %v: %s", err, out)
		}
	}
}
