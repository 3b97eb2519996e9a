package cgroup

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// A cgroup whose last process leaves a moment after the call is removed
// from every hierarchy it is in; one that still holds a process after
// busyFor is left and reported, and one found nowhere is no error.
func TestRemoveEmptyWaitsForABusyCgroup(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("making cgroups needs root")
	}
	path := fmt.Sprintf("/remove-test-%d", os.Getpid())
	dirs := makeTestCgroup(t, path)
	cmd := exec.Command("sleep", "0.3")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill() }()
	if err := AddProcess(DefaultRoot, path, cmd.Process.Pid); err != nil {
		t.Fatal(err)
	}
	go func() { _ = cmd.Wait() }() // reaped: a zombie would keep the cgroup busy

	if err := RemoveEmpty(DefaultRoot, path, 50*time.Millisecond); err == nil {
		t.Fatal("a cgroup holding a process for longer than busyFor: no error")
	}
	for _, d := range dirs {
		if _, err := os.Stat(d); err != nil {
			t.Errorf("%s of a cgroup holding a process: %v", d, err)
		}
	}
	if err := RemoveEmpty(DefaultRoot, path, 5*time.Second); err != nil {
		t.Fatalf("a cgroup whose process leaves within busyFor: %v", err)
	}
	for _, d := range dirs {
		if _, err := os.Stat(d); !os.IsNotExist(err) {
			t.Errorf("%s left: %v", d, err)
		}
	}
	if err := RemoveEmpty(DefaultRoot, path, 0); err != nil {
		t.Errorf("a cgroup found nowhere: %v", err)
	}
}

// On a v1 layout the path goes from every hierarchy directory (a hybrid
// host's unified tree and named hierarchies too), through the links such as
// cpu -> cpu,cpuacct once; a directory that cannot go is reported and the
// others still go. The root cgroup is refused.
func TestRemoveEmptyOnEveryHierarchy(t *testing.T) {
	root := t.TempDir()
	for _, h := range []string{"cpu,cpuacct", "memory", "systemd", "unified"} {
		if err := os.MkdirAll(filepath.Join(root, h, "pod", "ctr"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink("cpu,cpuacct", filepath.Join(root, "cpu")); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(root, "memory", "pod", "ctr", "child"), 0o755); err != nil {
		t.Fatal(err)
	}
	err := RemoveEmpty(root, "pod/ctr", 0)
	if err == nil || !strings.Contains(err.Error(), filepath.Join(root, "memory", "pod", "ctr")) || strings.Count(err.Error(), "remove cgroup") != 1 {
		t.Errorf("error %v, want one naming the memory hierarchy's directory alone", err)
	}
	for _, h := range []string{"cpu,cpuacct", "systemd", "unified"} {
		if _, err := os.Stat(filepath.Join(root, h, "pod", "ctr")); !os.IsNotExist(err) {
			t.Errorf("%s: the cgroup is left (%v)", h, err)
		}
		if _, err := os.Stat(filepath.Join(root, h, "pod")); err != nil {
			t.Errorf("%s: its parent went too: %v", h, err)
		}
	}
	if err := RemoveEmpty(root, "/", 0); err == nil {
		t.Error("the root cgroup: no error")
	}
}

// On a v2 layout the one directory goes.
func TestRemoveEmptyUnified(t *testing.T) {
	root := t.TempDir()
	if err := os.WriteFile(filepath.Join(root, "cgroup.controllers"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(root, "pod", "ctr"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := RemoveEmpty(root, "/pod/ctr", 0); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "pod", "ctr")); !os.IsNotExist(err) {
		t.Errorf("the cgroup is left (%v)", err)
	}
}
