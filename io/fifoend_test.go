package io

import (
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The process writes its last lines and exits while its client's reader is
// gone (containerd down; CRI opens the FIFO again in its recovery): the
// lines wait in the FIFO, and a reader that comes later, opening it in
// blocking mode as containerd's FIFO library does, gets them and then its
// end of file. Closing the shim's ends at the stream's end discarded them,
// and left that reader waiting for a writer for ever.
func TestOutputUnreadAtTheEndWaitsForTheNextReader(t *testing.T) {
	path := mkfifo(t, "out")
	client, err := os.OpenFile(path, unix.O_RDONLY|unix.O_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	p, err := Open(Config{Stdout: path}, Env{})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	_, w, _ := p.RuntimeFiles()
	const last = "last words\n"
	client.Close() // containerd goes away
	w.Write([]byte(last))
	p.ReleaseRuntimeFiles() // the process exits
	if !p.Drain(5 * time.Second) {
		t.Fatal("the relay did not finish")
	}
	if got := clientReads(t, path, 5*time.Second); got != last {
		t.Errorf("the next reader read %q, want %q and then the end of file", got, last)
	}
}

// With the client's reader there at the stream's end, the shim's ends close
// at once, bytes unread or not: that reader keeps them, and its end of file
// is not delayed.
func TestOutputEndsAtOnceWithAClientReader(t *testing.T) {
	path := mkfifo(t, "out")
	client, err := os.OpenFile(path, unix.O_RDONLY|unix.O_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	p, err := Open(Config{Stdout: path}, Env{})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	_, w, _ := p.RuntimeFiles()
	w.Write([]byte("unread\n"))
	p.ReleaseRuntimeFiles()
	if !p.Drain(5 * time.Second) {
		t.Fatal("the relay did not finish")
	}
	f := p.clientQueues[0].(*clientFIFO)
	f.mu.Lock()
	ended := f.endsClosed
	f.mu.Unlock()
	if !ended {
		t.Error("the shim's ends of a FIFO its client reads are still open after the stream ended")
	}
	unix.SetNonblock(int(client.Fd()), false)
	b := make([]byte, 64)
	n, _ := client.Read(b)
	if string(b[:n]) != "unread\n" {
		t.Errorf("the client read %q, want the unread line", b[:n])
	}
	if n, err := client.Read(b); n != 0 || err == nil {
		t.Errorf("after the line: %d bytes, %v; want the end of file", n, err)
	}
}
