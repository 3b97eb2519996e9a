package direct

import (
	"os"
	"os/exec"
	"slices"
	"testing"
	"time"
)

// A child that carries the same -socket as its parent (as a daemon's child
// does between fork and exec) is not listed as a daemon of its own.
func TestProcessesWithArgLeavesOutChildren(t *testing.T) {
	socket := "/nonexistent/" + RandID(12)
	// The outer sh passes -socket as its own argument and runs an inner sh
	// that passes it too; both wait until killed.
	cmd := exec.Command("sh", "-c", `sh -c 'sleep 60' inner -socket "$2"; :`, "outer", "-socket", socket)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	deadline := time.Now().Add(5 * time.Second)
	for {
		// Wait until the inner sh is there: two processes carry the flag.
		all := processesWithArgIn(allProcesses(), "-socket", socket)
		if len(all) == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("processes passing -socket %s: %v, want the outer and the inner sh", socket, all)
		}
		time.Sleep(10 * time.Millisecond)
	}
	got := processesWithArg("-socket", socket)
	if !slices.Equal(got, []int{cmd.Process.Pid}) {
		t.Errorf("processesWithArg: %v, want only the parent %d", got, cmd.Process.Pid)
	}
}

// A child whose command line was read while it lived and which is gone
// (reaped) when its parent is looked up is no daemon either: the daemon's
// throwaway child (see processesWithArg) exits at once, and findDaemon
// once found it beside its daemon, "processes serving ...: [18379 18388],
// want exactly one daemon", in a harness run two at a time.
func TestLeaveOutChildrenLeavesOutTheGone(t *testing.T) {
	const daemon, child = 18379, 18388
	parent := func(pid int) (int, error) {
		if pid == daemon {
			return 1, nil
		}
		return 0, os.ErrNotExist // reaped between the two reads
	}
	if got := leaveOutChildren([]int{daemon, child}, parent); !slices.Equal(got, []int{daemon}) {
		t.Errorf("leaveOutChildren: %v, want only the daemon %d", got, daemon)
	}
}
