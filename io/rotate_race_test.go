package io

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Two processes of one shim given the same capped log (a task and its exec)
// rotate it independently, each under its own lock: when both decide to
// rotate at once, neither may lose the file the other has just made, nor
// what was written to it. Nothing is pushed out here (max-files holds all),
// so every record written must be found in one of the files.
func TestTwoProcessesRotatingAtOnceLoseNothing(t *testing.T) {
	const writers, records = 2, 3000
	path := filepath.Join(t.TempDir(), "c.log")
	o := FileOptions{Path: path, MaxSize: 2048, MaxFiles: 200}
	var wg sync.WaitGroup
	for w := range writers {
		r, err := openRotating(o)
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer r.Close()
			for i := range records {
				if _, err := r.writeRecord(fmt.Appendf(nil, "w%d %05d %s\n", w, i, "0123456789012345678901234567890123456789")); err != nil {
					t.Errorf("writer %d record %d: %v", w, i, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	found := map[string]bool{}
	files, _ := filepath.Glob(path + "*")
	for _, name := range files {
		f, err := os.Open(name)
		if err != nil {
			t.Fatal(err)
		}
		s := bufio.NewScanner(f)
		for s.Scan() {
			found[s.Text()[:9]] = true
		}
		f.Close()
	}
	lost := 0
	for w := range writers {
		for i := range records {
			if !found[fmt.Sprintf("w%d %05d ", w, i)] {
				lost++
			}
		}
	}
	if lost > 0 {
		t.Errorf("%d of %d records lost across %d files", lost, writers*records, len(files))
	}
}

// Something else holding an flock on the log's directory (a backup tool)
// delays a rotation by at most rotationLockWait: it does not stop the log,
// and the rotation still happens.
func TestRotationNotStoppedByAForeignLockOnTheDirectory(t *testing.T) {
	dir := t.TempDir()
	held, err := os.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	if err := unix.Flock(int(held.Fd()), unix.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "c.log")
	r, err := openRotating(FileOptions{Path: path, MaxSize: 1024, MaxFiles: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	done := make(chan error, 1)
	go func() {
		rec := []byte(strings.Repeat("x", 99) + "\n")
		for range 11 { // the 11th record rotates
			if _, err := r.writeRecord(rec); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * rotationLockWait):
		t.Fatal("the rotation is still waiting for the directory's lock")
	}
	if size(path) != 100 || size(path+".1") != 1000 {
		t.Errorf("sizes %d and %d after the rotation, want 100 and 1000", size(path), size(path+".1"))
	}
}
