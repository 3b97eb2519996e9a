package io

import (
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// stdout and stderr naming the same FIFO, with a client whose reader opens
// it only after the process wrote to both and exited (a busy client): the
// reader gets both streams whole, then end of file. With a write end per
// stream, the first relay to finish could close its end before the other's
// open had completed, and the reader took that for the end (about 1 in 15
// runs here); so it is tried many times.
// The same for a file:// URI naming the FIFO (namesFIFO).
// And for stderr naming it by another path (a symlink).
func TestSameFIFOForStdoutAndStderrReadLate(t *testing.T) {
	t.Run("path", func(t *testing.T) { sameFIFOReadLate(t, "", "fifo://", false) })
	t.Run("file-uri", func(t *testing.T) { sameFIFOReadLate(t, "file://", "file://", false) })
	t.Run("symlink", func(t *testing.T) { sameFIFOReadLate(t, "", "", true) })
}

func sameFIFOReadLate(t *testing.T, outScheme, errScheme string, symlink bool) {
	for i := 0; i < 200; i++ {
		path := mkfifo(t, "both")
		errPath := path
		if symlink {
			errPath = path + ".link"
			if err := os.Symlink(path, errPath); err != nil {
				t.Fatal(err)
			}
		}
		p, err := Open(Config{Stdout: outScheme + path, Stderr: errScheme + errPath}, Env{})
		if err != nil {
			t.Fatal(err)
		}
		_, w, ew := p.RuntimeFiles()
		w.Write([]byte("out\n"))
		ew.Write([]byte("err\n"))
		p.ReleaseRuntimeFiles()
		got := clientReads(t, path, 5*time.Second)
		if got != "out\nerr\n" && got != "err\nout\n" {
			t.Fatalf("run %d: the client read %q", i+1, got)
		}
		if !p.Drain(5 * time.Second) {
			t.Fatalf("run %d: not drained", i+1)
		}
		if own, client := p.Queued(); own != 0 || client != 0 {
			t.Fatalf("run %d: queued %d %d", i+1, own, client)
		}
		p.Close()
	}
}

// stdout and stderr naming the same FIFO whose client stopped reading: the
// stall policy applies to each stream, and after the stall timeout the
// process is no longer held back on either. Through one shared file the two
// relays shared its write deadline, the stall clock: the relay that stalled
// first cleared it as it began discarding, and the other, which had just
// started to wait for room, waited without a clock, for ever (its stream,
// and the process writing it, blocked despite the timeout). Here the moment
// between the first relay's stall and its clearing is widened, so that the
// other always starts its wait within it; in the shim the race was lost
// about once in a few hundred stalls.
func TestSameFIFOStalledReaderDiscardsBothStreams(t *testing.T) {
	defer func(f func()) { discardStarts = f }(discardStarts)
	discardStarts = func() { time.Sleep(100 * time.Millisecond) }
	for i := 0; i < 3; i++ {
		path := mkfifo(t, "both")
		client, err := os.OpenFile(path, os.O_RDONLY|unix.O_NONBLOCK, 0)
		if err != nil {
			t.Fatal(err)
		}
		p, err := Open(Config{Stdout: path, Stderr: path}, Env{StallTimeout: 200 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		procOut, procErr := launchedProcess(t, p)
		done := make(chan string, 2)
		write := func(name string, w *os.File) {
			chunk := make([]byte, 4096)
			for n := 0; n < 256<<10; n += len(chunk) {
				if _, err := w.Write(chunk); err != nil {
					done <- name + ": " + err.Error()
					return
				}
			}
			done <- ""
		}
		go write("stdout", procOut)
		go write("stderr", procErr)
		timeout := time.After(5 * time.Second)
		for range 2 {
			select {
			case msg := <-done:
				if msg != "" {
					t.Fatal(msg)
				}
			case <-timeout:
				t.Fatalf("run %d: a stream was still held back 5 s after the reader stalled (stall timeout 200ms); %d bytes dropped", i+1, p.dropped.Load())
			}
		}
		procOut.Close()
		procErr.Close()
		if !p.Drain(5 * time.Second) {
			t.Fatalf("run %d: not drained", i+1)
		}
		p.Close()
		client.Close()
	}
}

// Close of stdout and stderr sharing a FIFO whose client reads nothing, with
// both relays waiting for room (the process filled it, then exited): Close
// returns at once, with no stall clock to end the wait (Docker's namespace
// has none) and with one. It used to close the shared FIFO a user at a time
// and then wait for the second relay, which held its source, until the
// clock ran out: for ever without one, while Delete held the process's lock.
func TestCloseOfASharedFIFONobodyReads(t *testing.T) {
	for _, stall := range []time.Duration{-1, 4 * time.Second} {
		path := mkfifo(t, "both")
		client, err := os.OpenFile(path, os.O_RDONLY|unix.O_NONBLOCK, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer client.Close()
		p, err := Open(Config{Stdout: path, Stderr: path}, Env{StallTimeout: stall})
		if err != nil {
			t.Fatal(err)
		}
		_, w, ew := p.RuntimeFiles()
		if _, err := w.Write(make([]byte, 80<<10)); err != nil { // more than the FIFO holds
			t.Fatal(err)
		}
		if _, err := ew.Write(make([]byte, 20<<10)); err != nil {
			t.Fatal(err)
		}
		time.Sleep(100 * time.Millisecond) // both relays wait for room by now
		p.ReleaseRuntimeFiles()
		closesWithin(t, p, 2*time.Second)
	}
}
