package io

import (
	"testing"
	"time"
)

// stdout and stderr naming the same FIFO, with a client whose reader opens
// it only after the process wrote to both and exited (a busy client): the
// reader gets both streams whole, then end of file. With a write end per
// stream, the first relay to finish could close its end before the other's
// open had completed, and the reader took that for the end (about 1 in 15
// runs here); so it is tried many times.
// The same for a file:// URI naming the FIFO (namesFIFO).
func TestSameFIFOForStdoutAndStderrReadLate(t *testing.T) {
	t.Run("path", func(t *testing.T) { sameFIFOReadLate(t, "", "fifo://") })
	t.Run("file-uri", func(t *testing.T) { sameFIFOReadLate(t, "file://", "file://") })
}

func sameFIFOReadLate(t *testing.T, outScheme, errScheme string) {
	for i := 0; i < 200; i++ {
		path := mkfifo(t, "both")
		p, err := Open(Config{Stdout: outScheme + path, Stderr: errScheme + path}, Env{})
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
