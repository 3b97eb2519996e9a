package cgroup

import (
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// A file longer than the pooled buffer is read whole, and the next read of a short file
// sees only its own content.
func TestReadersLongAndShortFiles(t *testing.T) {
	dir := t.TempDir()
	var long strings.Builder
	for i := 0; long.Len() < 3*readBufSize; i++ {
		long.WriteString("key")
		long.WriteString(strings.Repeat("x", i%7))
		long.WriteString(" 42\n")
	}
	long.WriteString("last 7\n")
	write(t, dir, "long", long.String())
	write(t, dir, "short", " 12345\n")
	got, err := readString(filepath.Join(dir, "long"))
	if err != nil || got != long.String() {
		t.Fatalf("readString of a %d-byte file: %d bytes, err %v", long.Len(), len(got), err)
	}
	kv, err := readKV(filepath.Join(dir, "long"))
	if err != nil || kv["last"] != 7 || kv["key"] != 42 {
		t.Fatalf("readKV: last=%d key=%d err %v", kv["last"], kv["key"], err)
	}
	if v, err := readUint(filepath.Join(dir, "short")); err != nil || v != 12345 {
		t.Fatalf("readUint after a long file: %d, %v", v, err)
	}
	for _, f := range []func(string) error{
		func(p string) error { _, err := readUint(p); return err },
		func(p string) error { _, err := readKV(p); return err },
		func(p string) error { _, err := readString(p); return err },
	} {
		err := f(filepath.Join(dir, "missing"))
		if !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), "missing") {
			t.Errorf("reading a missing file: %v, want ErrNotExist naming the file", err)
		}
	}
	if _, err := readUint(filepath.Join(dir, "long")); err == nil {
		t.Error("readUint of a multi-line file: no error")
	}
}

// maxStatsAlloc bounds what one v1 statistics answer (read and encoded) allocates: it was
// 56 KB before the pooled readers, about 10 KB with them, and 2.2 KB (57 allocations: the
// answer's own messages) since paths are built on the stack and files parsed in place.
const maxStatsAlloc = 8 << 10

// A metrics poll allocates little: containerd 2.4's CRI sends one per pod and container
// every second, and each shim's heap grows by that between collections. Measured on the
// test process's own cgroup (real cgroupfs files; a temp dir's files differ in size).
func TestStatsV1AllocatesLittle(t *testing.T) {
	cg, err := ForPid(DefaultRoot, os.Getpid())
	if err != nil {
		t.Skipf("no cgroup of the test process: %v", err)
	}
	if cg.V2 {
		t.Skip("cgroup v2 host: this bound is for the v1 statistics")
	}
	if raceDetector {
		t.Skip("the race detector's own allocations would be counted")
	}
	poll := func() {
		if _, _, err := cg.Metrics(); err != nil {
			t.Skipf("statistics of the test process's cgroup: %v", err)
		}
	}
	poll()
	const n = 50
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range n {
		poll()
	}
	runtime.ReadMemStats(&after)
	per := (after.TotalAlloc - before.TotalAlloc) / n
	t.Logf("one v1 statistics answer: %d bytes, %d allocations", per, (after.Mallocs-before.Mallocs)/n)
	if per > maxStatsAlloc {
		t.Errorf("one v1 statistics answer allocates %d bytes, want at most %d", per, maxStatsAlloc)
	}
}
