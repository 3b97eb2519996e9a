package process

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/containerd/errdefs"

	shimio "github.com/example/containerd-shim-example-v2/io"
)

// A container the runtime has no state for (created from a checkpoint and
// not restored yet, or state removed behind the shim) has nothing to kill:
// Kill answers NotFound, which containerd's kill-then-delete takes as done,
// not an unknown error that stops the delete. A runtime that still has the
// container and fails passes its error on. Pids never says NotFound for it:
// containerd, reloading shims after a restart, would delete the task.
func TestKillAndPidsOfAContainerTheRuntimeDoesNotHave(t *testing.T) {
	for _, c := range []struct {
		name     string
		state    string
		notFound bool
	}{
		{"gone", `state) echo "container does not exist" >&2; exit 1;;`, true},
		{"there", `state) echo '{}';;`, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			rt, _ := fakeRuntime(t, dir, `
kill) echo "container does not exist" >&2; exit 1;;
`+c.state)
			ct := &Container{ID: "c", Bundle: dir, rt: rt}
			ct.init = newProcess(ct, "", shimio.Config{}, nil)
			ctx := context.Background()
			err := ct.init.Kill(ctx, 9, true)
			if got := errors.Is(err, errdefs.ErrNotFound); err == nil || got != c.notFound {
				t.Errorf("Kill: %v; NotFound %v, want %v", err, got, c.notFound)
			}
			// Pids asks the runtime with `ps`, which the fake refuses.
			if _, err = ct.Pids(ctx); err == nil || errors.Is(err, errdefs.ErrNotFound) {
				t.Errorf("Pids: %v; want the runtime's error, not NotFound", err)
			}
		})
	}
}

// Kill meeting the init's exit before the reaper has (kubelet's SIGKILL
// after the grace period, as the init dies): the runtime refuses a
// container whose init is gone while its state is still there. The init,
// a zombie, has finished: NotFound, as CRI's stop and containerd's
// kill-then-delete need, not an unknown error.
func TestKillOfAnInitThatHasJustExited(t *testing.T) {
	dir := t.TempDir()
	rt, _ := fakeRuntime(t, dir, `
kill) echo "container not running" >&2; exit 1;;
state) echo '{}';;`)
	ct := &Container{ID: "c", Bundle: dir, rt: rt}
	ct.init = newProcess(ct, "", shimio.Config{}, nil)
	zombie := exec.Command("true")
	if err := zombie.Start(); err != nil {
		t.Fatal(err)
	}
	defer zombie.Wait()
	for deadline := time.Now().Add(5 * time.Second); !exitedChild(zombie.Process.Pid); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the child did not exit")
		}
	}
	ct.init.pid, ct.init.status = zombie.Process.Pid, Running // exited, not reaped: the reaper has not got to it
	if err := ct.init.Kill(context.Background(), 9, false); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("Kill of an init that has just exited: %v, want NotFound", err)
	}
}

// The init reaped, but its exit not recorded yet (it waits for the running
// execs), and its PID already another process's: an exec launch and a
// pause that the runtime refuses are FailedPrecondition all the same. The
// reused PID is the test's own, alive and no zombie.
func TestRefusalsAfterTheInitsPIDWasReused(t *testing.T) {
	ct := &Container{ID: "c", Bundle: t.TempDir()}
	ct.init = newProcess(ct, "", shimio.Config{}, nil)
	ct.init.pid, ct.init.status = os.Getpid(), Running
	ct.initReaped = true
	refused := errors.New("container not running")
	if err := ct.execLaunchError("e", refused); !errdefs.IsFailedPrecondition(err) {
		t.Errorf("exec launch refused after the init's reap: %v, want FailedPrecondition", err)
	}
	if err := ct.freezeError(OpPause, refused); !errdefs.IsFailedPrecondition(err) {
		t.Errorf("pause refused after the init's reap: %v, want FailedPrecondition", err)
	}
}
