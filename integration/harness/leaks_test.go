package harness

import (
	"os/exec"
	"strconv"
	"testing"
	"time"
)

// A child whose command line matches as its parent's does (a shim's child
// between fork and exec) is not listed beside its parent.
func TestProcessesLeavesOutChildren(t *testing.T) {
	mark := "harness-test-" + time.Now().Format("150405.000000000")
	cmd := exec.Command("sh", "-c", `sh -c 'sleep 60' inner "$1"; :`, "outer", mark)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	marked := func(args []string) bool { return args[len(args)-1] == mark }
	deadline := time.Now().Add(5 * time.Second)
	for {
		// Both carry the mark once the inner sh runs; only the outer is listed.
		if inner, err := exec.Command("pgrep", "-f", "-P", strconv.Itoa(cmd.Process.Pid), mark).Output(); err == nil && len(inner) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the inner sh did not start")
		}
		time.Sleep(10 * time.Millisecond)
	}
	got := Processes(marked)
	if len(got) != 1 || got[0].Pid != cmd.Process.Pid {
		t.Errorf("Processes: %v, want only the outer sh (pid %d)", got, cmd.Process.Pid)
	}
}
