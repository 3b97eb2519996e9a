package direct

import (
	"context"
	"encoding/json"
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

// CloseIO on a terminal ends the input of the process reading it in each of
// its modes: a program with line editing off (raw or cbreak: full-screen
// programs, `stty -icanon`), which reads the end-of-file character as a
// plain byte, is hung up once it has read it and not exited, as the stock
// shim hangs it up (it waited for more input for ever); a shell at its
// prompt (its line editor also turns line editing off) takes the character
// as the end and exits 0 after running what it was given, with all its
// output: it is not hung up (the stock shim's hang-up would cut it short).
func TestStdinTerminalEndOfInputModes(t *testing.T) {
	t.Parallel()
	env := NewEnv(t)
	c := env.Run(t, Config{Mode: Bootstrap, Name: "ttyend", Args: loopArgs, NullIO: true})
	ctx := TestContext(t, time.Minute)
	start(t, ctx, c, "")

	t.Run("raw", func(t *testing.T) {
		tio := terminalExec(t, ctx, c, "raw", "stty -icanon -echo; echo ready; cat")
		tio.WaitStdout(t, "ready", WaitTimeout)
		if err := tio.Write("ab"); err != nil {
			t.Fatalf("write stdin: %v", err)
		}
		tio.WaitStdout(t, "ab", WaitTimeout)
		closeTerminalInput(t, ctx, c, tio, "raw")
		if got := wait(t, ctx, c, "raw").GetExitStatus(); got != 129 {
			t.Errorf("exec after CloseIO: exit status %d, want 129 (SIGHUP: its terminal hung up)", got)
		}
		deleteTask(t, ctx, c, "raw")
	})

	t.Run("raw-after-the-end", func(t *testing.T) {
		// The input ends while the terminal still edits lines (the
		// program that turns it raw comes after: piped input that ran
		// out first); the character is read in raw mode.
		tio := terminalExec(t, ctx, c, "late", "echo ready; while [ ! -e /tmp/late-go ]; do sleep 0.05; done; stty -icanon -echo; echo raw; cat")
		tio.WaitStdout(t, "ready", WaitTimeout)
		closeTerminalInput(t, ctx, c, tio, "late")
		time.Sleep(300 * time.Millisecond) // the end-of-file character is written
		addExec(t, ctx, c, "late-go", []string{"touch", "/tmp/late-go"}, nil)
		start(t, ctx, c, "late-go")
		wait(t, ctx, c, "late-go")
		deleteTask(t, ctx, c, "late-go")
		tio.WaitStdout(t, "raw", WaitTimeout)
		// Without the watch the process waits for input for ever. With
		// it, the hang-up ends it by SIGHUP (129). (A status 0 here, its
		// read having returned end of file, was a process started with
		// SIGHUP ignored: see TestChildrenStartWithHangupAtDefault.)
		if got := wait(t, ctx, c, "late").GetExitStatus(); got != 129 {
			t.Errorf("exec after CloseIO: exit status %d, want 129 (SIGHUP: its terminal hung up)", got)
		}
		deleteTask(t, ctx, c, "late")
	})

	t.Run("shell", func(t *testing.T) {
		tio := terminalExec(t, ctx, c, "shell", "exec sh -i")
		tio.WaitStdout(t, "# ", WaitTimeout) // the prompt: its line editor reads the terminal
		if err := tio.Write("echo slept-$((40+2))\n"); err != nil {
			t.Fatalf("write stdin: %v", err)
		}
		closeTerminalInput(t, ctx, c, tio, "shell")
		if got := wait(t, ctx, c, "shell").GetExitStatus(); got != 0 {
			t.Errorf("interactive shell after CloseIO: exit status %d, want 0 (the end-of-file character ended it)", got)
		}
		tio.WaitStdout(t, "slept-42", WaitTimeout) // its terminal has no stderr to end
		deleteTask(t, ctx, c, "shell")
	})
	stop(t, ctx, c)
}

// terminalExec adds and starts an exec running script under sh with a
// terminal and a stdin FIFO.
func terminalExec(t *testing.T, ctx context.Context, c *Container, execID, script string) *Stdio {
	t.Helper()
	tio := NewStdio(t, StdioConfig{Stdin: true})
	r := c.ExecRequest(t, execID, []string{"sh", "-c", script}, tio)
	var spec map[string]any
	if err := json.Unmarshal(r.Spec.GetValue(), &spec); err != nil {
		t.Fatal(err)
	}
	spec["terminal"] = true
	value, err := json.Marshal(spec)
	if err != nil {
		t.Fatal(err)
	}
	r.Spec.Value, r.Terminal, r.Stderr = value, true, "" // a terminal has one output
	if _, err := c.Task().Exec(ctx, r); err != nil {
		t.Fatalf("Exec %s: %v", execID, err)
	}
	start(t, ctx, c, execID)
	return tio
}

// closeTerminalInput detaches the client's stdin writer and ends the
// input with CloseIO, as ctr does when its own stdin ends.
func closeTerminalInput(t *testing.T, ctx context.Context, c *Container, tio *Stdio, execID string) {
	t.Helper()
	if err := tio.Detach(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Task().CloseIO(ctx, &taskv3.CloseIORequest{ID: c.ID, ExecID: execID, Stdin: true}); err != nil {
		t.Fatalf("CloseIO %s: %v", execID, err)
	}
}
