package process

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/example/containerd-shim-example-v2/cgroup"
)

// Under cgroup v1 the kernel notifies every cgroup below the one whose limit
// was hit (a pod's, the node's), before the kill, which only the victim's
// cgroup counts. A container whose own count does not move reports no OOM
// kill; one whose count moves after the notification reports one; on a
// kernel that counts no kills the notification itself is reported.
func TestV1OOMNotificationNeedsACountedKill(t *testing.T) {
	defer func(d []time.Duration) { oomRecheckAfter = d }(oomRecheckAfter)
	short := []time.Duration{time.Millisecond, 5 * time.Millisecond, 20 * time.Millisecond}
	// The last one long enough that a count written after the notification
	// is found however late this goroutine runs on a loaded machine.
	long := append(short, 100*time.Millisecond, 10*time.Second)
	oomRecheckAfter = short
	root := t.TempDir()
	mem := mkdir(t, filepath.Join(root, "memory", "pod", "c"))
	setKills := func(control string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(mem, "memory.oom_control"), []byte(control), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	setKills("oom_kill_disable 0\nunder_oom 0\noom_kill 0\n")
	cg, err := cgroup.Parse(root, []byte("9:memory:/pod/c\n"), false)
	if err != nil {
		t.Fatal(err)
	}
	reported := make(chan uint64, 4)
	c := &Container{ID: "c", cg: cg, oomWatcher: &cgroup.OOMWatcher{}}
	c.events.OOM = func(c *Container) { reported <- c.oomSeen } // called with c.mu held
	c.limitMarks = cg.LimitMarks()
	recheckDone := func() {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
			c.mu.Lock()
			busy := c.oomRecheck
			c.mu.Unlock()
			if !busy {
				return
			}
			if time.Now().After(deadline) {
				t.Fatal("the rechecks never ended")
			}
		}
	}

	// Another container's OOM under the pod's limit: notified, nothing
	// counted here.
	c.reportOOM(true)
	recheckDone()
	select {
	case n := <-reported:
		t.Fatalf("an OOM kill (count %d) reported for a container that lost nothing", n)
	default:
	}

	// Its own: notified, counted a moment later.
	oomRecheckAfter = long
	c.reportOOM(true)
	setKills("oom_kill_disable 0\nunder_oom 0\noom_kill 1\n")
	select {
	case n := <-reported:
		if n != 1 {
			t.Errorf("reported with count %d, want 1", n)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no OOM kill reported after the kill was counted")
	}
	recheckDone()

	// A deleted container reports nothing more, even if a recheck then finds
	// a kill counted.
	oomRecheckAfter = short
	c.reportOOM(true)
	c.mu.Lock()
	c.oomStopped = true
	c.mu.Unlock()
	setKills("oom_kill_disable 0\nunder_oom 0\noom_kill 2\n")
	recheckDone()
	select {
	case n := <-reported:
		t.Fatalf("an OOM kill (count %d) reported after the container was deleted", n)
	default:
	}
	c.mu.Lock()
	c.oomStopped = false
	c.mu.Unlock()

	// A kernel before 4.13: no oom_kill line, the notification is the kill.
	setKills("oom_kill_disable 0\nunder_oom 0\n")
	c.reportOOM(true)
	select {
	case n := <-reported:
		if n != 2 {
			t.Errorf("reported with count %d, want 2", n)
		}
	default:
		t.Error("no OOM kill reported on a kernel that counts none")
	}
}
