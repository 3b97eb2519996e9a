package io

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// A CRI record the file takes only part of (a full disk) must not stay in
// the log torn: the next record would be glued to its stump, and kubelet
// would read both as one line with a timestamp inside its content. The disk
// here is a tmpfs of one page, really full: the write that crosses into a
// second page is cut short with ENOSPC.
func TestCRIRecordCutShortLeavesNoStump(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a tmpfs")
	}
	dir := t.TempDir()
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size=4k"); err != nil {
		t.Fatalf("mount a one-page tmpfs: %v", err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
	path := filepath.Join(dir, "c.log")
	p, err := Open(Config{Stdout: "file://" + path + "?format=cri"}, Env{})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	_, out, _ := p.RuntimeFiles()
	waitSize := func(cond func(int64) bool) int64 {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for {
			st, err := os.Stat(path)
			if err == nil && cond(st.Size()) {
				return st.Size()
			}
			if time.Now().After(deadline) {
				t.Fatalf("log never reached the expected size")
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	first := "first " + strings.Repeat("x", 3900)
	out.Write([]byte(first + "\n"))
	size := waitSize(func(n int64) bool { return n > 0 })
	room := 4096 - size
	if room < 100 {
		t.Fatalf("the first record left %d bytes of the page, want room for the third", room)
	}

	// Longer than the room left: the page takes its head, the disk the rest.
	out.Write([]byte("second " + strings.Repeat("y", int(room)+100) + "\n"))
	deadline := time.Now().Add(5 * time.Second)
	for p.Dropped() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the cut record was not counted as dropped")
		}
		time.Sleep(5 * time.Millisecond)
	}

	out.Write([]byte("third\n"))
	p.ReleaseRuntimeFiles()
	if !p.Drain(5 * time.Second) {
		t.Fatal("not drained")
	}
	var got []string
	for _, r := range readRecords(t, path) {
		if r.tag != "F" {
			t.Errorf("record %.20q tagged %s", r.content, r.tag)
		}
		got = append(got, r.content)
	}
	if len(got) != 2 || got[0] != first || got[1] != "third" {
		t.Fatalf("records %.60q, want [first third] (the second lost whole)", got)
	}
}
