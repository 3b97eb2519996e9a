package io

import (
	"bytes"
	stdio "io"
	"sync/atomic"
	"testing"
	"time"
)

// ownerDown is an Env.ReaderOwner that is down while down says so and,
// once up, does not know since when.
func ownerDown(down *atomic.Bool) func() (bool, time.Time) {
	return func() (bool, time.Time) { return down.Load(), time.Time{} }
}

// While the reader's owner is down (containerd restarting: ReaderOwner
// says so), a stalled FIFO is waited for past the stall timeout, as
// containerd's own shim waits: nothing is discarded, and a reader that
// comes back after several timeouts gets every byte. A stall timeout far
// shorter than the probe and its recheck is held all the same.
func TestStallHeldWhileTheReaderIsReturning(t *testing.T) {
	for _, stall := range []time.Duration{200 * time.Millisecond, time.Microsecond} {
		t.Run(stall.String(), func(t *testing.T) {
			var down atomic.Bool
			down.Store(true)
			reader, p := fifoWithIdleReader(t, Env{StallTimeout: stall, ReaderOwner: ownerDown(&down)})
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
				t.Fatalf("the write ended (%v) with nobody reading while the reader's owner was down", err)
			case <-time.After(time.Second):
			}
			if d := p.Dropped(); d != 0 {
				t.Fatalf("%d bytes dropped while the reader's owner was down", d)
			}
			if stall < stallRecheck {
				// With the owner up, a timeout this short discards whenever
				// the FIFO is full for an instant: what it was run for is done.
				return
			}
			down.Store(false) // containerd is back, and so is its reader
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
		})
	}
}

// Once the reader's owner is back, a reader that still does not read gets
// the return grace (longer than this stall timeout), and then the process is
// no longer held back.
func TestStallHeldThenDiscardsWhenTheReaderStaysAway(t *testing.T) {
	var down atomic.Bool
	down.Store(true)
	const stall, grace = 200 * time.Millisecond, 500 * time.Millisecond
	reader, p := fifoWithIdleReader(t, Env{StallTimeout: stall, ReaderOwner: ownerDown(&down), ReturnGrace: grace})
	_, w, _ := p.RuntimeFiles()
	payload := bytes.Repeat([]byte("0123456789abcdef"), 1<<16)
	start := time.Now()
	time.AfterFunc(600*time.Millisecond, func() { down.Store(false) })
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

// An owner that restarted quicker than the clock, never seen down, and
// even just before the FIFO filled, still gives its reader the grace from
// its return; an owner up for longer than that does not hold the clock.
func TestQuickOwnerRestartGivesTheReaderItsGrace(t *testing.T) {
	const stall, grace = 300 * time.Millisecond, time.Second
	for name, upFor := range map[string]time.Duration{"restarted": 100 * time.Millisecond, "up long": time.Hour} {
		t.Run(name, func(t *testing.T) {
			start := time.Now()
			upSince := start.Add(-upFor)
			owner := func() (bool, time.Time) { return false, upSince }
			reader, p := fifoWithIdleReader(t, Env{StallTimeout: stall, ReaderOwner: owner, ReturnGrace: grace})
			_, w, _ := p.RuntimeFiles()
			payload := bytes.Repeat([]byte("0123456789abcdef"), 1<<16)
			written := make(chan error, 1)
			go func() {
				_, err := w.Write(payload)
				p.ReleaseRuntimeFiles()
				written <- err
			}()
			time.Sleep(time.Until(start.Add(700 * time.Millisecond))) // past the clock, inside the grace
			got, err := stdio.ReadAll(reader)
			if err != nil {
				t.Fatal(err)
			}
			if err := <-written; err != nil {
				t.Fatal(err)
			}
			switch {
			case upFor < grace && !bytes.Equal(got, payload):
				t.Fatalf("the reader back within its grace got %d bytes of %d (%d dropped)", len(got), len(payload), p.Dropped())
			case upFor > grace && p.Dropped() == 0:
				t.Fatal("a stall long after the owner's start was held: nothing discarded")
			}
		})
	}
}

// The same hold for a terminal's output.
func TestTerminalStallHeldWhileTheReaderIsReturning(t *testing.T) {
	var down atomic.Bool
	down.Store(true)
	reader, p, slave := terminalIntoFIFO(t, Env{StallTimeout: 200 * time.Millisecond, ReaderOwner: ownerDown(&down)})
	payload := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB
	written := make(chan error, 1)
	go func() {
		_, err := slave.Write(payload)
		written <- err
	}()
	select {
	case err := <-written:
		t.Fatalf("the terminal write ended (%v) with nobody reading while the reader's owner was down", err)
	case <-time.After(time.Second):
	}
	if d := p.Dropped(); d != 0 {
		t.Fatalf("%d terminal bytes dropped while the reader's owner was down", d)
	}
	down.Store(false)
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
