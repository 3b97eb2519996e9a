package io

import (
	"testing"
	"time"
)

// openWithin runs Open and fails the test if it has not returned within d
// (it would block in open(2) waiting for a FIFO's reader).
func openWithin(t *testing.T, cfg Config, d time.Duration) (*Pipes, error) {
	t.Helper()
	type result struct {
		p   *Pipes
		err error
	}
	done := make(chan result, 1)
	go func() { p, err := Open(cfg, Env{}); done <- result{p, err} }()
	select {
	case r := <-done:
		if r.p != nil {
			t.Cleanup(r.p.Close)
		}
		return r.p, r.err
	case <-time.After(d):
		t.Fatalf("Open(%+v) still blocked after %s", cfg, d)
		return nil, nil
	}
}

// A file:// URI naming an existing FIFO, whose reader comes only after the
// request (or never), must not block Open: the output waits for the reader,
// as containerd's own shim lets it, and reaches it whole once it comes.
func TestFileURINamingAFIFOWithoutAReader(t *testing.T) {
	path := mkfifo(t, "log")
	p, err := openWithin(t, Config{Stdout: "file://" + path}, 3*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	_, w, _ := p.RuntimeFiles()
	w.Write([]byte("out\n"))
	p.ReleaseRuntimeFiles()
	// The reader comes late: everything is there, then end of file.
	if got := clientReads(t, path, 5*time.Second); got != "out\n" {
		t.Fatalf("reader got %q", got)
	}
	// With a format the FIFO is opened as a log: no reader is a prompt
	// error. (A FIFO of its own: the first one's readers may not be gone.)
	path = mkfifo(t, "log2")
	if _, err := openWithin(t, Config{Stdout: "file://" + path + "?format=cri"}, 3*time.Second); err == nil {
		t.Error("a CRI log into a FIFO nobody reads was accepted")
	}
	// The same for a terminal's file:// output.
	if _, err := openWithin(t, Config{Terminal: true, Stdout: "file://" + path}, 3*time.Second); err != nil {
		t.Errorf("terminal: %v", err)
	}
}
