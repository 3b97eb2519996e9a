package io

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/containerd/errdefs"
)

// stdout and stderr naming one log file in two spellings of the same URI
// (options in another order, a localhost host) write one file: they must
// share its size and rotation, or each rotates on its own count, the file
// grows past max-size and records land in files the other has rotated away.
func TestSameLogFileSpelledTwiceRotatesOnce(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.log")
	const maxSize, files = 32 << 10, 20
	checkOneRotation(t, path, maxSize, files,
		fmt.Sprintf("file://%s?format=cri&max-size=%d&max-files=%d", path, maxSize, files),
		fmt.Sprintf("file://localhost%s?max-files=%d&max-size=%d&format=cri", path, files, maxSize))
}

// The same holds for one file reached by two paths: a symlink to it, or a
// hard link (what a bind mount of it looks like to the shim too).
func TestSameLogFileByTwoPathsRotatesOnce(t *testing.T) {
	for _, link := range []struct {
		name string
		make func(oldname, newname string) error
	}{{"symlink", os.Symlink}, {"hard link", os.Link}} {
		t.Run(link.name, func(t *testing.T) {
			dir := t.TempDir()
			path, other := filepath.Join(dir, "c.log"), filepath.Join(dir, "other.log")
			if err := os.WriteFile(path, nil, 0o600); err != nil {
				t.Fatal(err)
			}
			if err := link.make(path, other); err != nil {
				t.Fatal(err)
			}
			const maxSize, files = 32 << 10, 20
			checkOneRotation(t, path, maxSize, files,
				fmt.Sprintf("file://%s?format=cri&max-size=%d&max-files=%d", path, maxSize, files),
				fmt.Sprintf("file://%s?format=cri&max-size=%d&max-files=%d", other, maxSize, files))
		})
	}
}

// checkOneRotation writes 2000 records to each stream and finds every one
// once, in files rotated from path, none over maxSize.
func checkOneRotation(t *testing.T, path string, maxSize int64, files int, stdout, stderr string) {
	t.Helper()
	p, err := Open(Config{Stdout: stdout, Stderr: stderr}, Env{})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	_, out, errf := p.RuntimeFiles()
	const lines = 2000
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < lines; i++ {
			fmt.Fprintf(errf, "err %04d\n", i)
		}
	}()
	for i := 0; i < lines; i++ {
		fmt.Fprintf(out, "out %04d\n", i)
	}
	<-done
	p.ReleaseRuntimeFiles()
	if !p.Drain(10 * time.Second) {
		t.Fatal("not drained")
	}
	p.Close()
	paths := []string{path}
	for i := 1; i < files; i++ {
		if _, err := os.Stat(fmt.Sprintf("%s.%d", path, i)); err == nil {
			paths = append(paths, fmt.Sprintf("%s.%d", path, i))
		}
	}
	for _, f := range paths {
		if st, _ := os.Stat(f); st.Size() > maxSize {
			t.Errorf("%s is %d bytes, over max-size %d", f, st.Size(), maxSize)
		}
	}
	seen := map[string]int{}
	for _, r := range readRecords(t, paths...) {
		seen[r.stream+" "+r.content]++
	}
	for _, s := range []string{"stdout out", "stderr err"} {
		for i := 0; i < lines; i++ {
			if k := fmt.Sprintf("%s %04d", s, i); seen[k] != 1 {
				t.Fatalf("record %q found %d times (files %d)", k, seen[k], len(paths))
			}
		}
	}
}

// One file cannot take two formats or two rotation limits: refused whole.
func TestSameLogFileWithOtherOptionsRefused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.log")
	p, err := Open(Config{Stdout: "file://" + path + "?format=cri", Stderr: "file://" + path}, Env{})
	if err == nil {
		p.Close()
		t.Fatal("stdout in CRI format and stderr raw into one file accepted")
	}
	if !errdefs.IsInvalidArgument(err) {
		t.Fatalf("error %v, want invalid argument", err)
	}
}

// ... and so does one file by two paths with different options.
func TestSameLogFileByTwoPathsWithOtherOptionsRefused(t *testing.T) {
	dir := t.TempDir()
	path, other := filepath.Join(dir, "c.log"), filepath.Join(dir, "link.log")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(path, other); err != nil {
		t.Fatal(err)
	}
	p, err := Open(Config{Stdout: "file://" + path + "?format=cri&max-size=1MiB", Stderr: "file://" + other + "?format=cri"}, Env{})
	if err == nil {
		p.Close()
		t.Fatal("one file by two paths with two rotation limits accepted")
	}
	if !errdefs.IsInvalidArgument(err) {
		t.Fatalf("error %v, want invalid argument", err)
	}
}
