package direct

import (
	"fmt"
	"strings"
	"testing"
	"time"

	taskv3 "github.com/containerd/containerd/api/runtime/task/v3"
	tasktypes "github.com/containerd/containerd/api/types/task"
)

// detachPause is how long a detached stdin is watched for a false
// end-of-file: cat would exit within microseconds of one.
const detachPause = 300 * time.Millisecond

// Input written to the stdin FIFO reaches the process; CloseIO, after the
// client closed its writer, is its end-of-input.
func TestStdinRoundTrip(t *testing.T) {
	t.Parallel()
	env := NewEnv(t)
	c := env.Run(t, Config{Mode: Bootstrap, Name: "cat", Args: []string{"cat"}, Stdio: StdioConfig{Stdin: true}})
	ctx := TestContext(t, time.Minute)
	start(t, ctx, c, "")
	// 256 KiB of numbered lines: several pipe buffers' worth each way.
	var in strings.Builder
	for i := 0; in.Len() < 256<<10; i++ {
		fmt.Fprintf(&in, "line %06d of the stdin round trip\n", i)
	}
	if err := c.IO.Write(in.String()); err != nil {
		t.Fatalf("write stdin: %v", err)
	}
	if err := c.IO.Detach(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Task().CloseIO(ctx, &taskv3.CloseIORequest{ID: c.ID, Stdin: true}); err != nil {
		t.Fatalf("CloseIO: %v", err)
	}
	if got := wait(t, ctx, c, "").GetExitStatus(); got != 0 {
		t.Errorf("cat: exit status %d, want 0 (it must have seen end-of-input)", got)
	}
	stdout, _ := c.IO.Output(t, WaitTimeout)
	sameText(t, "stdout of cat", stdout, in.String())
	// A second CloseIO (after the process is gone) is harmless.
	if _, err := c.Task().CloseIO(ctx, &taskv3.CloseIORequest{ID: c.ID, Stdin: true}); err != nil {
		t.Errorf("second CloseIO: %v", err)
	}
	deleteTask(t, ctx, c, "")
}

// A client may close its stdin writer and open a new one on the same FIFO
// (detach, re-attach): the process does not see end-of-input in between,
// and both writes arrive.
func TestStdinDetachReattach(t *testing.T) {
	t.Parallel()
	env := NewEnv(t)
	c := env.Run(t, Config{Mode: Bootstrap, Name: "reattach", Args: []string{"cat"}, Stdio: StdioConfig{Stdin: true}})
	ctx := TestContext(t, time.Minute)
	start(t, ctx, c, "")
	if err := c.IO.Write("first\n"); err != nil {
		t.Fatalf("write stdin: %v", err)
	}
	c.IO.WaitStdout(t, "first\n", WaitTimeout)
	if err := c.IO.Detach(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(detachPause)
	expectStatus(t, ctx, c, "", tasktypes.Status_RUNNING)
	if err := c.IO.Reattach(); err != nil {
		t.Fatal(err)
	}
	if err := c.IO.Write("second\n"); err != nil {
		t.Fatalf("write stdin after re-attach: %v", err)
	}
	c.IO.WaitStdout(t, "second\n", WaitTimeout)
	if err := c.IO.Detach(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Task().CloseIO(ctx, &taskv3.CloseIORequest{ID: c.ID, Stdin: true}); err != nil {
		t.Fatalf("CloseIO: %v", err)
	}
	if got := wait(t, ctx, c, "").GetExitStatus(); got != 0 {
		t.Errorf("cat: exit status %d, want 0", got)
	}
	if stdout, _ := c.IO.Output(t, WaitTimeout); stdout != "first\nsecond\n" {
		t.Errorf("stdout %q, want %q", stdout, "first\nsecond\n")
	}
	deleteTask(t, ctx, c, "")
}
