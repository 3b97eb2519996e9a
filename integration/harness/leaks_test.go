package harness

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
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

// The runc state directory of a fixed namespace ("moby", "k8s.io") is shared by every
// daemon on the host: a daemon counts (and force-deletes) only its own containers
// there, those whose bundle is under its directory. Another test run's container was
// once killed by a cleanup that deleted every container of "plugins.moby".
func TestLeftoversInASharedNamespaceAreOnlyTheDaemonsOwn(t *testing.T) {
	defer func(r string) { RuncRoot = r }(RuncRoot)
	RuncRoot = t.TempDir()
	base := t.TempDir()
	d := &Daemon{Base: base, State: filepath.Join(base, "state")}
	state := func(id, bundle string) string {
		dir := filepath.Join(RuncRoot, "moby", id)
		if err := os.MkdirAll(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		if bundle != "" {
			content := fmt.Sprintf(`{"id":%q,"config":{"labels":["bundle=%s"]}}`, id, bundle)
			if err := os.WriteFile(filepath.Join(dir, "state.json"), []byte(content), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		return dir
	}
	mine := state("mine", filepath.Join(d.State, "io.containerd.runtime.v2.task", "moby", "mine"))
	state("theirs", "/run/ex-test/other-daemon/state/io.containerd.runtime.v2.task/moby/theirs")
	state("prefix", base+"-other/state/io.containerd.runtime.v2.task/moby/prefix") // a sibling, not below
	unread := state("unreadable", "")
	got := d.Leftovers("moby", "")
	want := []string{"path " + mine, "path " + unread}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("leftovers %q, want %q (another daemon's containers are not this one's)", got, want)
	}
}
