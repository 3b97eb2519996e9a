package direct

import (
	"fmt"
	"os"
	"testing"
	"time"

	taskv3 "github.com/containerd/containerd/api/runtime/task/v3"
	"golang.org/x/sys/unix"
)

// A shim out of descriptors answers an exec's Start with ResourceExhausted
// (it was Unknown, as a runtime's failure is), and serves on once it has
// some again.
func TestExecStartOutOfDescriptors(t *testing.T) {
	t.Parallel()
	env := NewEnv(t)
	c := env.Run(t, Config{Mode: Bootstrap, Name: "nofds", Args: loopArgs, NullIO: true})
	ctx := TestContext(t, time.Minute)
	start(t, ctx, c, "")
	addExec(t, ctx, c, "starved", []string{"true"}, nil)

	pid := c.Shim.Pid
	var old unix.Rlimit
	if err := unix.Prlimit(pid, unix.RLIMIT_NOFILE, nil, &old); err != nil {
		t.Fatal(err)
	}
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatal(err)
	}
	// No descriptor beyond those open: the launch's first pipe fails.
	tight := unix.Rlimit{Cur: uint64(len(fds)), Max: old.Max}
	if err := unix.Prlimit(pid, unix.RLIMIT_NOFILE, &tight, nil); err != nil {
		t.Fatal(err)
	}
	restored := false
	restore := func() {
		if !restored {
			restored = true
			if err := unix.Prlimit(pid, unix.RLIMIT_NOFILE, &old, nil); err != nil {
				t.Error(err)
			}
		}
	}
	t.Cleanup(restore)
	_, err = c.Task().Start(ctx, &taskv3.StartRequest{ID: c.ID, ExecID: "starved"})
	restore()
	expectClass(t, "Start of an exec with the shim out of descriptors", err, "ResourceExhausted")
	deleteTask(t, ctx, c, "starved")

	addExec(t, ctx, c, "fed", []string{"true"}, nil)
	start(t, ctx, c, "fed")
	if got := wait(t, ctx, c, "fed").GetExitStatus(); got != 0 {
		t.Errorf("exec after the limit was lifted: exit %d, want 0", got)
	}
	deleteTask(t, ctx, c, "fed")
	stop(t, ctx, c)
}
