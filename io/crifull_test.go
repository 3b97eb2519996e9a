package io

import (
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// A CRI record the file takes only part of (a full disk; here the file size
// limit, which cuts a write short the same way) must not stay in the log
// torn: the next record would be glued to its stump, and kubelet would read
// both as one line with a timestamp inside its content.
func TestCRIRecordCutShortLeavesNoStump(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.log")
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
	out.Write([]byte("first\n"))
	size := waitSize(func(n int64) bool { return n > 0 })

	// Room for only a part of the next record. Writes past the limit fail
	// with EFBIG instead of killing the test with SIGXFSZ.
	signal.Ignore(syscall.SIGXFSZ)
	defer signal.Reset(syscall.SIGXFSZ)
	var old unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_FSIZE, &old); err != nil {
		t.Fatal(err)
	}
	cut := unix.Rlimit{Cur: uint64(size) + 20, Max: old.Max}
	if err := unix.Setrlimit(unix.RLIMIT_FSIZE, &cut); err != nil {
		t.Fatal(err)
	}
	restored := false
	restore := func() {
		if !restored {
			restored = true
			if err := unix.Setrlimit(unix.RLIMIT_FSIZE, &old); err != nil {
				t.Error(err)
			}
		}
	}
	defer restore()
	out.Write([]byte("second line, longer than the room left\n"))
	deadline := time.Now().Add(5 * time.Second)
	for p.Dropped() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the cut record was not counted as dropped")
		}
		time.Sleep(5 * time.Millisecond)
	}
	restore()

	out.Write([]byte("third\n"))
	p.ReleaseRuntimeFiles()
	if !p.Drain(5 * time.Second) {
		t.Fatal("not drained")
	}
	var got []string
	for _, r := range readRecords(t, path) {
		if r.tag != "F" {
			t.Errorf("record %q tagged %s", r.content, r.tag)
		}
		got = append(got, r.content)
	}
	if len(got) != 2 || got[0] != "first" || got[1] != "third" {
		t.Fatalf("records %q, want [first third] (the second lost whole)", got)
	}
}
