package direct

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	tasktypes "github.com/containerd/containerd/api/types/task"
)

// deleteCreatedWithin is well under the 10 s a Delete of a created task waits
// for the runtime's killed init to be reaped before it gives up on seeing it.
const deleteCreatedWithin = 3 * time.Second

// A task created and not started goes over in an in-place upgrade like a
// running one (until 2026-12-05 it held the whole daemon back, and
// `upgrade --all` failed while any container was between ctr's create and
// start): the new binary starts it, relays its output and reports its exit;
// one that is killed instead, never started, has its exit reported; and one
// deleted without a start is deleted as before the switch.
func TestUpgradeWithACreatedTask(t *testing.T) {
	t.Parallel()
	forEachAPI(t, func(t *testing.T, mode Mode) {
		env := NewEnv(t)
		ctx := TestContext(t, time.Minute)
		started := env.Run(t, Config{Mode: mode, Name: "upcreated", Args: []string{"sh", "-c", "echo started; exit 3"}})
		killed := env.Run(t, Config{Mode: mode, Name: "upkilled", Args: loopArgs, NullIO: true})
		deleted := env.Run(t, Config{Mode: mode, Name: "updeleted", Args: loopArgs, NullIO: true})
		for _, c := range []*Container{started, killed, deleted} {
			upgradeToSelf(t, ctx, c, 1)
			if st := expectStatus(t, ctx, c, "", tasktypes.Status_CREATED); st.GetPid() != c.Pid {
				t.Errorf("%s after the switch: pid %d, want the created init's %d", c.ID, st.GetPid(), c.Pid)
			}
		}

		if pid := start(t, ctx, started, ""); pid != started.Pid {
			t.Errorf("Start after the switch: pid %d, want %d", pid, started.Pid)
		}
		if got := wait(t, ctx, started, "").GetExitStatus(); got != 3 {
			t.Errorf("started after the switch: exit status %d, want 3", got)
		}
		started.IO.WaitStdout(t, "started\n", WaitTimeout)
		if d := deleteTask(t, ctx, started, ""); d.GetExitStatus() != 3 {
			t.Errorf("Delete: exit status %d, want 3", d.GetExitStatus())
		}
		expectTopics(t, started.Containerd.WaitTopic(t, WaitTimeout, topicDelete, 1), topicCreate, topicStart, topicExit, topicDelete)

		kill(t, ctx, killed, "", sigKILL)
		if got := wait(t, ctx, killed, "").GetExitStatus(); got != 137 {
			t.Errorf("killed before its start, after the switch: exit status %d, want 137", got)
		}
		if d := deleteTask(t, ctx, killed, ""); d.GetExitStatus() != 137 {
			t.Errorf("Delete: exit status %d, want 137", d.GetExitStatus())
		}
		expectTopics(t, killed.Containerd.WaitTopic(t, WaitTimeout, topicDelete, 1), topicCreate, topicExit, topicDelete)

		// Deleted without a start: the runtime kills the waiting init, and
		// the Delete waits for its exit, which the new binary claimed.
		begun := time.Now()
		d := deleteTask(t, ctx, deleted, "")
		t.Logf("Delete of the created task after the switch: %v, exit status %d", time.Since(begun), d.GetExitStatus())
		if took := time.Since(begun); took > deleteCreatedWithin {
			t.Errorf("Delete of the created task took %v: its exit was not seen", took)
		}
		if _, err := os.Stat(filepath.Join(deleted.RuncRoot, deleted.ID)); !os.IsNotExist(err) {
			t.Errorf("runc state of %s after its Delete: %v, want none", deleted.ID, err)
		}
	})
}
