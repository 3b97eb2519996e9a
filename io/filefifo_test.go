package io

import (
	"bytes"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"
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

// A CRI-format file:// log naming a FIFO whose reader stopped reading (a
// collector that hangs): once the process has exited and Drain has given
// up, Close returns. The relay's write waited for room holding the file's
// lock, which Close took before closing the file: it waited for ever, under
// Delete's lock on the process.
func TestCloseOfACRILogOnAFIFONobodyReads(t *testing.T) {
	p := criLogOnAStuckFIFO(t)
	_, w, _ := p.RuntimeFiles()
	if _, err := w.Write(bytes.Repeat(line100, 1000)); err != nil { // more than the FIFO holds
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond) // the relay waits for room by now
	p.ReleaseRuntimeFiles()
	if p.Drain(500 * time.Millisecond) {
		t.Fatal("drained into a FIFO nobody reads")
	}
	closesWithin(t, p, 2*time.Second)
}

// line100 is a line of 100 bytes.
var line100 = append(bytes.Repeat([]byte("x"), 99), '\n')

// criLogOnAStuckFIFO opens a process's stdio with stdout a CRI-format
// file:// log naming a FIFO whose reader (open until the test ends) never
// reads.
func criLogOnAStuckFIFO(t *testing.T) *Pipes {
	t.Helper()
	path := mkfifo(t, "log")
	collector, err := os.OpenFile(path, os.O_RDONLY|unix.O_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { collector.Close() })
	p, err := Open(Config{Stdout: "file://" + path + "?format=cri"}, Env{})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// closesWithin fails the test if p's Close has not returned within d.
func closesWithin(t *testing.T, p *Pipes, d time.Duration) {
	t.Helper()
	closed := make(chan struct{})
	go func() { p.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(d):
		t.Fatalf("Close still waits after %v", d)
	}
}

// The same after an upgrade: the successor adopted the log's file in
// blocking mode, out of the poller, and without the file its Close closes
// first, so its Close waited for ever again. (From a review.)
func TestCloseOfACRILogOnAFIFONobodyReadsAfterAnUpgrade(t *testing.T) {
	p := criLogOnAStuckFIFO(t)
	_, w, _ := p.RuntimeFiles()
	procOut, err := dupFile(w)
	if err != nil {
		t.Fatal(err)
	}
	p.ReleaseRuntimeFiles()
	p.Launched()
	procOut.Write([]byte("before the switch\n"))
	next := haltAndGoOn(t, p, "handover")
	go procOut.Write(bytes.Repeat(line100, 2000)) // more than the FIFO holds; nobody reads
	time.Sleep(200 * time.Millisecond)            // the relay waits for room by now
	closesWithin(t, next, 3*time.Second)
}
