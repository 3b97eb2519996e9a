package io

import (
	"bytes"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// rotatingLog opens a rotating log of 32 KiB files, two kept, and fills its
// live file with records up to near the cap: the next record of 1000 bytes
// rotates.
func rotatingLog(t *testing.T, path string) *rotatingFile {
	t.Helper()
	r, err := openRotating(FileOptions{Path: path, MaxSize: 32 << 10, MaxFiles: 2})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	fillNearCap(t, r)
	return r
}

var record1K = append(bytes.Repeat([]byte("r"), 999), '\n')

func fillNearCap(t *testing.T, r *rotatingFile) {
	t.Helper()
	for r.size+int64(len(record1K)) <= r.opts.MaxSize {
		if _, err := r.writeRecord(record1K); err != nil {
			t.Fatal(err)
		}
	}
}

func size(path string) int64 {
	st, err := os.Stat(path)
	if err != nil {
		return -1
	}
	return st.Size()
}

// A rotation that cannot open the next file (no descriptor left) changes
// nothing: the record is lost, as a failed write's is, but the live file
// keeps its name and content and the next rotation keeps them too. It used
// to rename the live file to <path>.1 first: the shim then wrote into
// <path>.1, with no <path>, and the next rotation removed <path>.1, the
// file it was writing. (From a review.)
func TestFailedRotationKeepsTheLog(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.log")
	r := rotatingLog(t, path)
	live := size(path)

	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	probe, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	lowest := probe.Fd()
	probe.Close()
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &syscall.Rlimit{Cur: uint64(lowest), Max: lim.Max}); err != nil {
		t.Skipf("cannot lower the descriptor limit: %v", err)
	}
	_, werr := r.writeRecord(record1K) // the rotation fails
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	if werr != nil {
		t.Fatalf("writeRecord after a failed rotation: %v (the relay would stop)", werr)
	}
	if got := size(path); got != live {
		t.Fatalf("after a failed rotation %s is %d bytes, want its %d", path, got, live)
	}
	if got := size(path + ".1"); got != -1 {
		t.Fatalf("after a failed rotation there is a %s of %d bytes", path+".1", got)
	}
	// The next record rotates: the live file becomes <path>.1, whole.
	if _, err := r.writeRecord(record1K); err != nil {
		t.Fatal(err)
	}
	if got := size(path + ".1"); got != live {
		t.Errorf("after the next rotation %s.1 is %d bytes, want the %d of the live file", path, got, live)
	}
	if got := size(path); got != int64(len(record1K)) {
		t.Errorf("after the next rotation %s is %d bytes, want the one record", path, got)
	}
}

// A log rotator that truncates the live file (copytruncate) leaves the
// shim's own count of its size too large: the next record goes into the
// truncated file, at its start, and does not rotate it, which would have
// pushed out <path>.1. (From a review.)
func TestCopyTruncateDoesNotRotate(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.log")
	r := rotatingLog(t, path)
	if _, err := r.writeRecord(record1K); err != nil { // the first rotation
		t.Fatal(err)
	}
	fillNearCap(t, r)
	rotated := size(path + ".1")
	if err := os.Truncate(path, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := r.writeRecord(record1K); err != nil {
		t.Fatal(err)
	}
	if got := size(path + ".1"); got != rotated {
		t.Errorf("%s.1 went from %d to %d bytes: the truncated file was rotated", path, rotated, got)
	}
	if got := size(path); got != int64(len(record1K)) {
		t.Errorf("%s is %d bytes after the truncation and one record, want %d", path, got, len(record1K))
	}
}
