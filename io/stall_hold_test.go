package io

import (
	"bytes"
	stdio "io"
	"sync/atomic"
	"testing"
	"time"
)

// While the reader's owner is down (containerd restarting: ReaderReturning
// says so), a stalled FIFO is waited for past the stall timeout, as
// containerd's own shim waits: nothing is discarded, and a reader that
// comes back after several timeouts gets every byte.
func TestStallHeldWhileTheReaderIsReturning(t *testing.T) {
	var returning atomic.Bool
	returning.Store(true)
	reader, p := fifoWithIdleReader(t, Env{StallTimeout: 200 * time.Millisecond, ReaderReturning: returning.Load})
	_, w, _ := p.RuntimeFiles()
	payload := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB: more than FIFO and pipe hold
	written := make(chan error, 1)
	go func() {
		_, err := w.Write(payload)
		p.ReleaseRuntimeFiles()
		written <- err
	}()
	select {
	case err := <-written:
		t.Fatalf("the write ended (%v) with nobody reading while the reader was expected back", err)
	case <-time.After(time.Second): // five stall timeouts
	}
	if d := p.Dropped(); d != 0 {
		t.Fatalf("%d bytes dropped while the reader was expected back", d)
	}
	returning.Store(false) // containerd is back, and so is its reader
	got, err := stdio.ReadAll(reader)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, payload) {
		t.Fatalf("the returning reader got %d bytes of %d (%d dropped)", len(got), len(payload), p.Dropped())
	}
	if err := <-written; err != nil {
		t.Fatal(err)
	}
}

// Once the reader's owner is back, a reader that still does not read gets
// the return grace (longer than this stall timeout), and then the process is
// no longer held back.
func TestStallHeldThenDiscardsWhenTheReaderStaysAway(t *testing.T) {
	var returning atomic.Bool
	returning.Store(true)
	const stall, grace = 200 * time.Millisecond, 500 * time.Millisecond
	reader, p := fifoWithIdleReader(t, Env{StallTimeout: stall, ReaderReturning: returning.Load, ReturnGrace: grace})
	_, w, _ := p.RuntimeFiles()
	payload := bytes.Repeat([]byte("0123456789abcdef"), 1<<16)
	time.AfterFunc(600*time.Millisecond, func() { returning.Store(false) })
	start := time.Now()
	writtenWithin(t, 10*time.Second, func() error {
		_, err := w.Write(payload)
		p.ReleaseRuntimeFiles()
		return err
	}, "the process stayed blocked after the reader's owner came back and nobody read")
	if d := time.Since(start); d < 600*time.Millisecond+grace {
		t.Errorf("discarding began %s after the write, before the hold and its grace of %s were over", d, grace)
	}
	if !p.Drain(5 * time.Second) {
		t.Fatal("relay did not finish")
	}
	got, _ := stdio.ReadAll(reader)
	if dropped := p.Dropped(); dropped == 0 || uint64(len(got))+dropped != uint64(len(payload)) {
		t.Fatalf("delivered %d + dropped %d, written %d", len(got), dropped, len(payload))
	}
}

// The same hold for a terminal's output.
func TestTerminalStallHeldWhileTheReaderIsReturning(t *testing.T) {
	var returning atomic.Bool
	returning.Store(true)
	reader, p, slave := terminalIntoFIFO(t, Env{StallTimeout: 200 * time.Millisecond, ReaderReturning: returning.Load})
	payload := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB
	written := make(chan error, 1)
	go func() {
		_, err := slave.Write(payload)
		written <- err
	}()
	select {
	case err := <-written:
		t.Fatalf("the terminal write ended (%v) with nobody reading while the reader was expected back", err)
	case <-time.After(time.Second):
	}
	if d := p.Dropped(); d != 0 {
		t.Fatalf("%d terminal bytes dropped while the reader was expected back", d)
	}
	returning.Store(false)
	got := make([]byte, 0, len(payload))
	buf := make([]byte, 64<<10)
	_ = reader.SetReadDeadline(time.Now().Add(10 * time.Second))
	for len(got) < len(payload) {
		n, err := reader.Read(buf)
		got = append(got, buf[:max(n, 0)]...)
		if err != nil {
			break
		}
	}
	if !bytes.Equal(got, payload) || p.Dropped() != 0 {
		t.Fatalf("the returning reader got %d bytes of %d, %d dropped", len(got), len(payload), p.Dropped())
	}
	if err := <-written; err != nil {
		t.Fatal(err)
	}
}
