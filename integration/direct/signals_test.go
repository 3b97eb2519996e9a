package direct

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	runcopts "github.com/containerd/containerd/api/types/runc/options"
)

// A shim started with SIGHUP ignored (its manager under nohup, say) starts
// its runtime, and so the containers, with SIGHUP at its default: an
// ignoring kept across execve would reach the container's processes
// whenever the runtime does not reset it first (runc 1.5 resets it on a
// goroutine, racing with the fork of the container's process), and a
// process whose terminal the shim hangs up (TestStdinTerminalEndOfInputModes)
// would live on instead of ending by SIGHUP.
func TestChildrenStartWithHangupAtDefault(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	record := filepath.Join(dir, "sigign")
	wrapper := filepath.Join(dir, "recording-runc")
	script := fmt.Sprintf("#!/bin/sh\ngrep '^SigIgn:' /proc/self/status >>%s\nexec runc \"$@\"\n", record)
	if err := os.WriteFile(wrapper, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	env := NewEnv(t)
	c := env.Run(t, Config{Mode: Bootstrap, Name: "hup", HangupIgnored: true,
		Args:    []string{"grep", "^SigIgn:", "/proc/self/status"},
		Options: runcOptions(t, &runcopts.Options{BinaryName: wrapper})})
	ctx := TestContext(t, time.Minute)
	start(t, ctx, c, "")
	wait(t, ctx, c, "")
	stdout, _ := c.IO.Output(t, WaitTimeout)
	deleteTask(t, ctx, c, "")

	b, err := os.ReadFile(record)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	for i, line := range lines {
		if hangupIgnored(t, line) {
			t.Errorf("runtime call %d of %d began with SIGHUP ignored (%s)", i+1, len(lines), line)
		}
	}
	if hangupIgnored(t, strings.TrimSpace(stdout)) {
		t.Errorf("the container's process began with SIGHUP ignored (%s)", strings.TrimSpace(stdout))
	}
}

// hangupIgnored reads a /proc/<pid>/status SigIgn line.
func hangupIgnored(t *testing.T, line string) bool {
	t.Helper()
	hex, ok := strings.CutPrefix(line, "SigIgn:")
	if !ok {
		t.Fatalf("not a SigIgn line: %q", line)
	}
	mask, err := strconv.ParseUint(strings.TrimSpace(hex), 16, 64)
	if err != nil {
		t.Fatalf("SigIgn line %q: %v", line, err)
	}
	return mask&(1<<(syscall.SIGHUP-1)) != 0
}
