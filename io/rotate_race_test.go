package io

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
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
