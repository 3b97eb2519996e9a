package io

import (
	"os"
	"sync/atomic"
	"testing"
	"time"
)

// A bulk burst followed by one small write from a writer that keeps the pipe
// open (`head -c 123457 /dev/zero; echo; exec sleep`): the small write must
// arrive although no end of file follows it. The relay goes from splice back
// to read/write in between; a byte that came while it wrote a short read's
// bytes once stayed in its buffer for good (about one run in ten in a
// 2-CPU VM, rarely on a fast host).
func TestSmallWriteAfterBulkArrives(t *testing.T) {
	const bulk = 123457
	for i := 0; i < 50; i++ {
		path := mkfifo(t, "out")
		// The client: reading as Go's FIFO clients do, counting bytes.
		var got atomic.Int64
		rdone := make(chan struct{})
		go func() {
			defer close(rdone)
			f, err := os.OpenFile(path, os.O_RDONLY, 0)
			if err != nil {
				return
			}
			defer f.Close()
			buf := make([]byte, 32<<10)
			for {
				n, err := f.Read(buf)
				got.Add(int64(n))
				if err != nil {
					return
				}
			}
		}()
		p, err := Open(Config{Stdout: path}, Env{})
		if err != nil {
			t.Fatal(err)
		}
		_, w, _ := p.RuntimeFiles()
		// The process holds its own copy of the write end, as a container does.
		proc, err := dupFile(w)
		if err != nil {
			t.Fatal(err)
		}
		p.ReleaseRuntimeFiles()
		chunk := make([]byte, 4096)
		for left := bulk; left > 0; {
			n := min(left, len(chunk))
			if _, err := proc.Write(chunk[:n]); err != nil {
				t.Fatal(err)
			}
			left -= n
		}
		time.Sleep(time.Duration(i%5) * time.Millisecond)
		proc.Write([]byte("\n"))
		deadline := time.Now().Add(5 * time.Second)
		for got.Load() != bulk+1 && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
		if n := got.Load(); n != bulk+1 {
			own, client := p.Queued()
			t.Fatalf("run %d: client got %d of %d bytes (delivered %d, in the process's pipe %d, in the FIFO %d)",
				i, n, bulk+1, p.Moved(), own, client)
		}
		proc.Close()
		p.Drain(5 * time.Second)
		p.Close()
		<-rdone
	}
}

func dupFile(f *os.File) (*os.File, error) {
	fd, err := dupFD(f)
	if err != nil {
		return nil, err
	}
	return os.NewFile(uintptr(fd), f.Name()), nil
}
