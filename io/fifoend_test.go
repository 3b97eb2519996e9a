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
	const last = "last words\n"
	p := endedUnread(t, path, last)
	defer p.Close()
	// Introspection counts them as waiting for the client.
	if _, client := p.Queued(); client != uint64(len(last)) {
		t.Errorf("%d bytes counted in the client's FIFO, want %d", client, len(last))
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

// An in-place upgrade while the output waits for its next reader: the
// successor holds the FIFO's write end on, so the reader that comes after the
// switch still gets the bytes and then its end of file. They were lost at the
// switch: ended relays were not handed over, and the predecessor's ends went
// away with its execve.
func TestOutputUnreadAtTheEndCrossesAHandover(t *testing.T) {
	path := mkfifo(t, "out")
	const last = "last words before the switch\n"
	st, next := handedOver(t, endedUnread(t, path, last))
	if len(st.Lingering) != 1 || len(st.Outputs) != 0 {
		t.Fatalf("exported %d lingering FIFOs and %d outputs, want 1 and 0", len(st.Lingering), len(st.Outputs))
	}
	if _, client := next.Queued(); client != uint64(len(last)) {
		t.Errorf("the successor counts %d bytes in the client's FIFO, want %d", client, len(last))
	}
	// And on through a second upgrade before the reader comes.
	st, third := handedOver(t, next)
	defer third.Close()
	if len(st.Lingering) != 1 {
		t.Fatalf("the successor exported %d lingering FIFOs, want 1", len(st.Lingering))
	}
	if got := clientReads(t, path, 5*time.Second); got != last {
		t.Errorf("the next reader read %q, want %q and then the end of file", got, last)
	}
}

// The successor's Close (the task's Delete) lets a lingering FIFO go.
func TestLingeringFIFOHandedOverClosesWithThePipes(t *testing.T) {
	path := mkfifo(t, "out")
	_, next := handedOver(t, endedUnread(t, path, "never read\n"))
	next.Close()
	// No writer is left: a reader that does not wait sees end of file at
	// once, where a held write end would make it see EAGAIN.
	r, err := os.OpenFile(path, unix.O_RDONLY|unix.O_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if n, err := unix.Read(int(r.Fd()), make([]byte, 64)); n != 0 || err != nil {
		t.Errorf("a reader after Close: %d bytes, %v; want the end of file (no writer left)", n, err)
	}
}

// endedUnread opens stdio whose stdout is the FIFO at path, has its client's
// reader go away (containerd down), then the process write data and exit:
// the output waits in the FIFO for the next reader.
func endedUnread(t *testing.T, path, data string) *Pipes {
	t.Helper()
	client, err := os.OpenFile(path, unix.O_RDONLY|unix.O_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	p, err := Open(Config{Stdout: path}, Env{})
	if err != nil {
		t.Fatal(err)
	}
	_, w, _ := p.RuntimeFiles()
	client.Close()
	w.Write([]byte(data))
	p.ReleaseRuntimeFiles()
	if !p.Drain(5 * time.Second) {
		t.Fatal("the relay did not finish")
	}
	return p
}

// handedOver halts p, then hands it over (exportedAndImported).
func handedOver(t *testing.T, p *Pipes) (*PipesState, *Pipes) {
	t.Helper()
	if err := p.Halt(time.Second); err != nil {
		t.Fatal(err)
	}
	return exportedAndImported(t, p)
}

// exportedAndImported exports halted p, imports the state into a successor
// and closes p, as an in-place upgrade's execve does.
func exportedAndImported(t *testing.T, p *Pipes) (*PipesState, *Pipes) {
	t.Helper()
	st, err := p.Export(keepDups{})
	if err != nil {
		t.Fatal(err)
	}
	next, err := ImportPipes(*st, adoptFD, Env{})
	if err != nil {
		t.Fatal(err)
	}
	p.Close()
	return st, next
}
