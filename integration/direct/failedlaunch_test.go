package direct

import (
	"strings"
	"testing"
	"time"

	taskv3 "github.com/containerd/containerd/api/runtime/task/v3"
)

// A launch the runtime refuses (a binary that is not in the image) fails the
// request with the runtime's error, and that error is not also written to the
// process's stderr FIFO: the runtime writes it to the stdio it was given, and
// a client logging that FIFO (`docker logs`, CRI's log file) would show it as
// output of a process that never ran. The stock shim drops it too.
func TestFailedLaunchWritesNothingToStdio(t *testing.T) {
	t.Parallel()
	const missing = "/no-such-binary"
	env := NewEnv(t)

	t.Run("create", func(t *testing.T) {
		c := env.Launch(t, Config{Mode: Bootstrap, Name: "nobin", Args: []string{missing}})
		ctx := TestContext(t, time.Minute)
		err := c.Create(ctx)
		if err == nil || !strings.Contains(err.Error(), "no-such-binary") {
			t.Fatalf("Create of a container whose binary is missing: %v, want the runtime's error naming it", err)
		}
		stdout, stderr := c.IO.Output(t, WaitTimeout)
		if stdout != "" || stderr != "" {
			t.Errorf("the failed create wrote %q to stdout and %q to stderr, want nothing", stdout, stderr)
		}
	})

	t.Run("exec", func(t *testing.T) {
		c := env.Run(t, Config{Mode: Bootstrap, Name: "nobinexec", Args: loopArgs, NullIO: true})
		ctx := TestContext(t, time.Minute)
		start(t, ctx, c, "")
		pio := NewStdio(t, StdioConfig{})
		addExec(t, ctx, c, "nobin", []string{missing}, pio)
		_, err := c.Task().Start(ctx, &taskv3.StartRequest{ID: c.ID, ExecID: "nobin"})
		if err == nil || !strings.Contains(err.Error(), "no-such-binary") {
			t.Fatalf("Start of an exec whose binary is missing: %v, want the runtime's error naming it", err)
		}
		stdout, stderr := pio.Output(t, WaitTimeout)
		if stdout != "" || stderr != "" {
			t.Errorf("the failed exec wrote %q to stdout and %q to stderr, want nothing", stdout, stderr)
		}
		// Output of an exec that does start still flows (held, then released).
		ok := NewStdio(t, StdioConfig{})
		addExec(t, ctx, c, "echo", []string{"sh", "-c", "echo out; echo err >&2"}, ok)
		start(t, ctx, c, "echo")
		if stdout, stderr := ok.Output(t, WaitTimeout); stdout != "out\n" || stderr != "err\n" {
			t.Errorf("a started exec's output %q / %q, want %q / %q", stdout, stderr, "out\n", "err\n")
		}
		stop(t, ctx, c)
	})
}
