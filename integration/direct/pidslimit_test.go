package direct

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	taskv3 "github.com/containerd/containerd/api/runtime/task/v3"
	"golang.org/x/sys/unix"
)

// pidsCgroup makes a v1 pids cgroup of the test's own, and moves pid into it;
// the cleanup moves it back to the root and removes the cgroup.
func pidsCgroup(t *testing.T, pid int) string {
	t.Helper()
	dir := "/sys/fs/cgroup/pids/exhaust-" + RandID(8)
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Skipf("no v1 pids controller: %v", err)
	}
	t.Cleanup(func() {
		if data, err := os.ReadFile(filepath.Join(dir, "cgroup.procs")); err == nil {
			for _, p := range strings.Fields(string(data)) {
				_ = os.WriteFile("/sys/fs/cgroup/pids/cgroup.procs", []byte(p), 0)
			}
		}
		deadline := time.Now().Add(10 * time.Second)
		for {
			err := unix.Rmdir(dir)
			if err == nil || errors.Is(err, os.ErrNotExist) {
				return
			}
			if time.Now().After(deadline) {
				t.Errorf("rmdir %s: %v", dir, err)
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
	})
	if err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(fmt.Sprint(pid)), 0); err != nil {
		t.Fatal(err)
	}
	return dir
}

func pidsSet(t *testing.T, dir, v string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, "pids.max"), []byte(v), 0); err != nil {
		t.Fatal(err)
	}
}

func readTrim(p string) string {
	b, _ := os.ReadFile(p)
	return strings.TrimSpace(string(b))
}

// A shim whose pids cgroup is at its limit (the cgroup it shares with
// containerd and the other shims, say) answers the requests that need a new
// process with an error, stays alive, and serves again once the limit is
// lifted. The stock shim (2.4) does: fork/exec EAGAIN, as Unknown errors.
func TestPidsLimitShimSurvives(t *testing.T) {
	env := NewEnv(t)
	a := env.Run(t, Config{Mode: Bootstrap, Name: "host", Args: loopArgs, NullIO: true})
	ctx := TestContext(t, 3*time.Minute)
	start(t, ctx, a, "")
	cg := pidsCgroup(t, a.Shim.Pid)
	b := lateTask(t, env, a, "starved", t.TempDir(), []string{"sh", "-c", "exit 3"})
	// A few rounds: whether the Go runtime needs a new thread meanwhile
	// varies from run to run.
	for round := 0; round < 4; round++ {
		time.Sleep(3 * time.Second) // the daemon is idle (and trimmed) before the cgroup fills
		pidsSet(t, cg, readTrim(filepath.Join(cg, "pids.current")))
		t.Logf("round %d: the shim has %s threads", round, readTrim(filepath.Join(cg, "pids.current")))
		_, err := b.Task().Create(ctx, b.CreateRequest())
		if err == nil {
			t.Fatalf("Create at the pids limit worked")
		}
		t.Logf("Create at the pids limit: %v", err)
		exec := fmt.Sprintf("e%d", round)
		_, err = a.Task().Exec(ctx, a.ExecRequest(t, exec, []string{"true"}, nil))
		if err == nil {
			_, err = a.Task().Start(ctx, &taskv3.StartRequest{ID: a.ID, ExecID: exec})
			t.Logf("Start of an exec at the pids limit: %v", err)
		} else {
			t.Logf("Exec at the pids limit: %v", err)
		}
		if a.Shim.Exited(500 * time.Millisecond) {
			t.Fatalf("round %d: the shim died at its cgroup's pids limit (pids.events: %s); its log:\n%s",
				round, readTrim(filepath.Join(cg, "pids.events")), a.Bundle.ShimLog())
		}
		pidsSet(t, cg, "max")
		_, _ = a.Task().Delete(ctx, &taskv3.DeleteRequest{ID: a.ID, ExecID: exec})
	}
	if _, err := b.Task().Create(ctx, b.CreateRequest()); err != nil {
		t.Fatalf("Create once the limit is lifted: %v", err)
	}
	start(t, ctx, b, "")
	if got := wait(t, ctx, b, "").GetExitStatus(); got != 3 {
		t.Errorf("exit status %d, want 3", got)
	}
	deleteTask(t, ctx, b, "")
	stop(t, ctx, a)
}
