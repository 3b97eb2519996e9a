package io

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// A log rotator of the rename kind (logrotate without copytruncate, its
// "create" option; kubelet's own rotation renames too) moves the live file to
// <path>.1 and makes a new, empty <path>. The shim goes on writing the moved
// file; its own next rotation must not throw that output away: the newest
// records written before it must still be in <path>.1 or <path>.
func TestRotationAfterAnOutsideRenameKeepsNewestOutput(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.log")
	p, err := Open(Config{Stdout: "file://" + path + "?format=cri&max-size=32KiB&max-files=2"}, Env{})
	if err != nil {
		t.Fatal(err)
	}
	_, out, _ := p.RuntimeFiles()
	fmt.Fprintf(out, "before the rename\n")
	waitUntil(t, func() bool { return size(path) > 0 })
	// The rotator: rename, then create the new live file.
	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, nil, 0o640); err != nil {
		t.Fatal(err)
	}
	// ~40 KiB of lines: the shim rotates once, part way through.
	line := strings.Repeat("x", 90)
	for i := 0; i < 400; i++ {
		fmt.Fprintf(out, "after %03d %s\n", i, line)
	}
	p.ReleaseRuntimeFiles()
	if !p.Drain(10 * time.Second) {
		t.Fatal("not drained")
	}
	p.Close()
	recs := readRecords(t, path+".1", path)
	if len(recs) == 0 {
		t.Fatal("no records kept")
	}
	var kept int
	for _, r := range recs {
		if strings.HasPrefix(r.content, "after ") {
			kept++
		}
	}
	first := recs[0].content
	if len(first) > 9 {
		first = first[:9]
	}
	t.Logf("%s.1: %d bytes, %s: %d bytes; %d of 400 lines kept, the first %q", path, size(path+".1"), path, size(path), kept, first)
	// Without the external rename, max-files=2 of 32 KiB keeps at least the
	// last 32 KiB: about 320 of these lines.
	if kept < 300 {
		t.Errorf("only %d of the 400 newest lines kept (%d bytes in all): the shim's rotation threw away the file it was writing", kept, size(path+".1")+size(path))
	}
}

func waitUntil(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("timed out")
		}
	}
}

// With max-files=1 the shim truncates in place when the file is full. After
// a rotator renamed the file to its archive name, that truncation empties
// the rotator's archive.
func TestTruncationAfterAnOutsideRenameKeepsTheArchive(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.log")
	p, err := Open(Config{Stdout: "file://" + path + "?format=cri&max-size=32KiB&max-files=1"}, Env{})
	if err != nil {
		t.Fatal(err)
	}
	_, out, _ := p.RuntimeFiles()
	line := strings.Repeat("x", 90)
	for i := 0; i < 200; i++ { // ~24 KiB
		fmt.Fprintf(out, "before %03d %s\n", i, line)
	}
	waitUntil(t, func() bool { return p.Moved() >= 200*101 })
	archive := path + ".20261207-200000"
	if err := os.Rename(path, archive); err != nil {
		t.Fatal(err)
	}
	archived := size(archive)
	for i := 0; i < 200; i++ { // the file is full: the shim's truncation
		fmt.Fprintf(out, "after %03d %s\n", i, line)
	}
	p.ReleaseRuntimeFiles()
	if !p.Drain(10 * time.Second) {
		t.Fatal("not drained")
	}
	p.Close()
	if got := size(archive); got < archived {
		t.Errorf("the rotator's archive %s went from %d to %d bytes: the shim truncated it", archive, archived, got)
	}
}

// Two processes of one shim (a task and its exec, or two containers of a
// grouped shim) logging to the same CRI file with a size cap: the cap holds.
func TestTwoProcessesKeepOneFileCapped(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.log")
	uri := "file://" + path + "?format=cri&max-size=32KiB&max-files=3"
	line := strings.Repeat("x", 90)
	var ps []*Pipes
	for range 2 {
		p, err := Open(Config{Stdout: uri}, Env{})
		if err != nil {
			t.Fatal(err)
		}
		ps = append(ps, p)
	}
	for n, p := range ps {
		_, out, _ := p.RuntimeFiles()
		for i := 0; i < 250; i++ { // ~30 KiB each
			fmt.Fprintf(out, "p%d %03d %s\n", n, i, line)
		}
		p.ReleaseRuntimeFiles()
		if !p.Drain(10 * time.Second) {
			t.Fatal("not drained")
		}
	}
	for _, p := range ps {
		p.Close()
	}
	for _, f := range []string{path, path + ".1", path + ".2"} {
		if s := size(f); s > 32<<10 {
			t.Errorf("%s is %d bytes, over max-size (32 KiB)", f, s)
		}
	}
}
