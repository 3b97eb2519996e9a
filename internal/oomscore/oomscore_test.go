package oomscore

import (
	"os"
	"os/exec"
	"testing"
)

// Set and Of agree on a child's score, raising it (which needs no
// privilege), and a score beyond the kernel's range is clamped.
func TestSetAndOf(t *testing.T) {
	cmd := exec.Command("sleep", "100")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	own, err := Of(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ set, want int }{{own + 1, own + 1}, {5000, 1000}} {
		if err := Set(cmd.Process.Pid, c.set); err != nil {
			t.Fatal(err)
		}
		if got, err := Of(cmd.Process.Pid); err != nil || got != c.want {
			t.Errorf("after Set(%d): %d, %v; want %d", c.set, got, err, c.want)
		}
	}
	if _, err := Of(-1); err == nil {
		t.Error("Of a process that cannot exist succeeded")
	}
}
