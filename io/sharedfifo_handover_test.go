package io

import (
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/example/containerd-shim-example-v2/internal/fdtest"
)

// stdout and stderr naming the same FIFO are handed over as one output in
// the next binary, as the binary before held them (streamFIFOs): one write
// end, one reader of its own and one handle on the FIFO, and the bytes
// waiting in it counted once. Each relay's export keeps its own duplicates,
// so the successor had two of each, and Queued (introspection's
// clientQueuedBytes) counted what the FIFO held twice. The client still
// gets both streams whole, then end of file.
func TestSameFIFOHandedOverAsOne(t *testing.T) {
	path := mkfifo(t, "both")
	onFIFO := func(target string) bool { return strings.HasSuffix(target, path) }
	client, err := os.OpenFile(path, os.O_RDONLY|unix.O_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	p, err := Open(Config{Stdout: path, Stderr: path}, Env{})
	if err != nil {
		t.Fatal(err)
	}
	procOut, procErr := launchedProcess(t, p)
	procOut.Write([]byte("out\n"))
	procErr.Write([]byte("err\n"))
	deadline := time.Now().Add(5 * time.Second)
	for _, c := p.Queued(); c != 8 && time.Now().Before(deadline); _, c = p.Queued() {
		time.Sleep(5 * time.Millisecond)
	}
	// The client's, the old binary's three, and the stderr relay's own
	// duplicate of the write end (ownEnd).
	before := fdtest.CountWhere(t, onFIFO)
	next := haltAndGoOn(t, p, "handover")
	// The next binary's stderr relay makes its duplicate as it starts.
	held := fdtest.CountWhere(t, onFIFO)
	for deadline := time.Now().Add(2 * time.Second); held != before && time.Now().Before(deadline); held = fdtest.CountWhere(t, onFIFO) {
		time.Sleep(5 * time.Millisecond)
	}
	if held != before {
		t.Errorf("%d descriptors on the FIFO after the handover, %d before: the next binary holds the shared FIFO's ends twice", held, before)
	}
	if _, c := next.Queued(); c != 8 {
		t.Errorf("the next binary counts %d bytes waiting in the FIFO, want 8", c)
	}
	procOut.Write([]byte("out2\n"))
	procErr.Write([]byte("err2\n"))
	procOut.Close()
	procErr.Close()
	if !next.Drain(5 * time.Second) {
		t.Fatal("not drained")
	}
	var got []byte
	buf := make([]byte, 64)
	for {
		n, err := client.Read(buf)
		got = append(got, buf[:max(n, 0)]...)
		if err != nil || n == 0 {
			break
		}
	}
	if s := string(got); len(s) != 18 || !strings.Contains(s, "out\n") || !strings.Contains(s, "err2\n") {
		t.Errorf("the client read %q", s)
	}
	next.Close()
	if got := fdtest.CountWhere(t, onFIFO); got != 1 {
		t.Errorf("%d descriptors left on the FIFO after Close, want the client's only", got)
	}
}

// stdout and stderr on one FIFO whose client has stopped reading (full,
// both relays waiting to write) can still be halted for an upgrade, and
// every byte arrives once after it. When the two relays wrote through one
// file, one waited in the poller, the other for the file's write lock,
// which the deadline a halt sets to wake a relay cannot end; the halt of
// the one waiting for the lock timed out and the upgrade was refused for
// as long as the client did not read (with Docker's no stall timeout:
// until it reads again). Each now writes through a file of its own.
func TestSameFIFOHaltedWhenFull(t *testing.T) {
	path := mkfifo(t, "both")
	start, got := lateReader(path, 0)
	p, err := Open(Config{Stdout: path, Stderr: path}, Env{StallTimeout: -1})
	if err != nil {
		t.Fatal(err)
	}
	procOut, procErr := launchedProcess(t, p)
	const n = 1 << 20
	wrote := make(chan error, 2)
	for _, f := range []*os.File{procOut, procErr} {
		go func() { _, err := f.Write(make([]byte, n)); wrote <- err }()
	}
	time.Sleep(200 * time.Millisecond) // the FIFO and both pipes are full
	if err := p.Halt(2 * time.Second); err != nil {
		t.Fatalf("halt with the shared FIFO full: %v", err)
	}
	_, next := exportedAndImported(t, p)
	defer next.Close()
	close(start)
	for range 2 {
		if err := <-wrote; err != nil {
			t.Fatal(err)
		}
	}
	procOut.Close()
	procErr.Close()
	select {
	case b := <-got:
		if len(b) != 2*n {
			t.Errorf("the client read %d bytes, want %d", len(b), 2*n)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the client did not get end of file")
	}
}
