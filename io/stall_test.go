package io

import (
	"bytes"
	"errors"
	stdio "io"
	"os"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// A reader that never reads must not freeze the process forever: after the
// stall timeout its output is discarded and counted, and what already waits
// in the FIFO is still there for a reader that comes back.
func TestStalledReaderDoesNotFreezeTheProcess(t *testing.T) {
	reader, p := fifoWithIdleReader(t, Env{StallTimeout: 200 * time.Millisecond})
	_, w, _ := p.RuntimeFiles()
	payload := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB
	writtenWithin(t, 10*time.Second, func() error {
		_, err := w.Write(payload)
		p.ReleaseRuntimeFiles()
		return err
	}, "the process stayed blocked writing with nobody reading")
	if !p.Drain(5 * time.Second) {
		t.Fatal("relay did not finish")
	}
	dropped := p.Dropped()
	got, _ := stdio.ReadAll(reader)
	if dropped == 0 || uint64(len(got))+dropped != uint64(len(payload)) {
		t.Fatalf("delivered %d + dropped %d != written %d", len(got), dropped, len(payload))
	}
	if len(got) == 0 || !bytes.Equal(got, payload[:len(got)]) {
		t.Fatalf("the %d bytes waiting in the FIFO were not kept intact", len(got))
	}
}

// A slow reader that keeps making progress loses nothing.
func TestSlowReaderLosesNothing(t *testing.T) {
	reader, p := fifoWithIdleReader(t, Env{StallTimeout: 300 * time.Millisecond})
	_, w, _ := p.RuntimeFiles()
	payload := bytes.Repeat([]byte("x"), 512<<10)
	go func() { w.Write(payload); p.ReleaseRuntimeFiles() }()
	var got bytes.Buffer
	buf := make([]byte, 64<<10)
	for {
		time.Sleep(50 * time.Millisecond) // slow, but well inside the timeout
		n, err := reader.Read(buf)
		got.Write(buf[:max(n, 0)])
		if err == stdio.EOF || (n == 0 && err == nil) {
			break
		}
	}
	if got.Len() != len(payload) || p.Dropped() != 0 {
		t.Fatalf("slow reader got %d of %d bytes, %d dropped", got.Len(), len(payload), p.Dropped())
	}
}

// Once discarding, room left in the FIFO is not mistaken for a returning
// reader: the writer is not blocked again and again.
func TestStalledReaderStaysDiscardedUntilItReads(t *testing.T) {
	_, p := fifoWithIdleReader(t, Env{StallTimeout: 200 * time.Millisecond})
	_, w, _ := p.RuntimeFiles()
	chunk := bytes.Repeat([]byte("z"), 1000) // small writes leave room in the FIFO's last page
	start := time.Now()
	for i := 0; i < 8000; i++ {
		if _, err := w.Write(chunk); err != nil {
			t.Fatal(err)
		}
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("writing 8 MB with nobody reading took %s: the relay kept blocking", d)
	}
	p.ReleaseRuntimeFiles()
}

// Delete's drain does not wait out the stall window for a reader that is gone.
func TestDrainGivesUpOnAStuckReader(t *testing.T) {
	_, p := fifoWithIdleReader(t, Env{})
	_, w, _ := p.RuntimeFiles()
	t0 := time.Now()
	w.Write(bytes.Repeat([]byte("q"), 100<<10)) // fits in FIFO + pipe, more than the FIFO alone
	p.ReleaseRuntimeFiles()
	t.Logf("write took %s", time.Since(t0))
	start := time.Now()
	if p.Drain(10 * time.Second) {
		t.Fatal("drain reported success with the reader stuck")
	}
	if d := time.Since(start); d > DrainIdleTimeout+2*time.Second {
		t.Fatalf("drain took %s", d)
	}
	t.Logf("drain gave up after %s", time.Since(start))
	start = time.Now()
	p.Close()
	if d := time.Since(start); d > time.Second {
		t.Fatalf("closing a stuck relay took %s", d)
	}
}

// fifoWithIdleReader makes a stdout FIFO with a client reader that never
// reads, and the Pipes relaying into it, opened with env.
func fifoWithIdleReader(t *testing.T, env Env) (*os.File, *Pipes) {
	t.Helper()
	path := mkfifo(t, "out")
	reader, err := os.OpenFile(path, os.O_RDONLY|unix.O_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { reader.Close() })
	p, err := Open(Config{Stdout: path}, env)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return reader, p
}

// A process that stays quiet for longer than the stall timeout and then
// writes is no stalled reader's victim: the stall clock runs only while the
// relay waits for room in the FIFO, not while it waits for output.
func TestQuietSpellLongerThanStallTimeout(t *testing.T) {
	path := mkfifo(t, "out")
	r, err := os.OpenFile(path, os.O_RDONLY|unix.O_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	p, err := Open(Config{Stdout: path}, Env{StallTimeout: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	_, w, _ := p.RuntimeFiles()
	go func() {
		w.Write([]byte("early\n"))
		time.Sleep(600 * time.Millisecond) // three stall timeouts of silence
		w.Write([]byte("late\n"))
		p.ReleaseRuntimeFiles()
	}()
	got, err := stdio.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != "early\nlate\n" {
		t.Errorf("client read %q, want %q", got, "early\nlate\n")
	}
	if d := p.Dropped(); d != 0 {
		t.Errorf("%d bytes dropped after a quiet spell", d)
	}
}

// The stall policy holds for a terminal's output too: with nobody reading
// the client's FIFO, the process writing to its terminal is not frozen once
// the stall timeout has passed; what is discarded is counted, and what the
// FIFO already held is kept. A reader that comes back gets output again.
func TestStalledReaderDoesNotFreezeATerminal(t *testing.T) {
	reader, p, slave := terminalIntoFIFO(t, Env{StallTimeout: 200 * time.Millisecond}) // reads only at the end
	payload := bytes.Repeat([]byte("0123456789abcdef"), 1<<16)                         // 1 MiB
	writtenWithin(t, 10*time.Second, func() error {
		_, err := slave.Write(payload)
		return err
	}, "the process stayed blocked writing to its terminal with nobody reading")
	if p.Dropped() == 0 {
		t.Fatal("nothing counted as dropped")
	}
	got := make([]byte, len(payload))
	n, _ := reader.Read(got)
	if n == 0 || !bytes.Equal(got[:n], payload[:n]) {
		t.Fatalf("the %d bytes waiting in the FIFO were not kept intact", n)
	}
	// The reader is back: new output reaches it.
	if _, err := slave.Write([]byte("again\n")); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	var tail []byte
	for !bytes.Contains(tail, []byte("again")) && time.Now().Before(deadline) {
		m, _ := reader.Read(got)
		tail = append(tail, got[:max(m, 0)]...)
		time.Sleep(10 * time.Millisecond)
	}
	if !bytes.Contains(tail, []byte("again")) {
		t.Errorf("output after the reader came back did not arrive (read %d bytes)", len(tail))
	}
}

// terminalIntoFIFO opens a terminal process's stdio with env: a pty whose
// output goes to a stdout FIFO. It returns the FIFO's reader (open, nothing
// read), the Pipes and the pty's slave, the process's side.
func terminalIntoFIFO(t *testing.T, env Env) (reader *os.File, p *Pipes, slave *os.File) {
	t.Helper()
	outPath := mkfifo(t, "out")
	reader, err := os.OpenFile(outPath, os.O_RDONLY|unix.O_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { reader.Close() })
	master, slave := openPty(t)
	t.Cleanup(func() { slave.Close() })
	p, err = Open(Config{Terminal: true, Stdout: outPath}, env)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	if err := p.AttachConsole(master); err != nil {
		t.Fatal(err)
	}
	return reader, p, slave
}

// writtenWithin runs write (a process's writes) and fails the test with
// stuck if it has not returned within d.
func writtenWithin(t *testing.T, d time.Duration, write func() error, stuck string) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- write() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(d):
		t.Fatal(stuck)
	}
}

// A reader slower than a page (4 KiB) per stall timeout, and per
// DrainIdleTimeout, is reading all the same: a full pipe takes a write
// again only once a whole page is free, so no write shows its progress,
// but its FIFO empties. Nothing is dropped, Drain does not give up on it,
// and once it reads faster everything arrives, in order. Before, the stall
// clock ran out under it (dropping what the relay held) and Drain gave up
// after DrainIdleTimeout.
func TestSlowReaderIsNoStalledReader(t *testing.T) {
	reader, p := fifoWithIdleReader(t, Env{StallTimeout: 300 * time.Millisecond})
	_, w, _ := p.RuntimeFiles()
	payload := make([]byte, 200<<10)
	for i := range payload {
		payload[i] = byte('a' + i%26)
	}
	if _, err := w.Write(payload[:100<<10]); err != nil { // the process's pipe holds the rest meanwhile
		t.Fatal(err)
	}
	go func() {
		w.Write(payload[100<<10:])
		p.ReleaseRuntimeFiles() // the process exits
	}()
	drained := make(chan bool, 1)
	go func() { drained <- p.Drain(30 * time.Second) }()

	var got []byte
	buf := make([]byte, 64<<10)
	slowUntil := time.Now().Add(DrainIdleTimeout + 600*time.Millisecond)
	for time.Now().Before(slowUntil) { // 100 B every 100 ms: 300 B per stall timeout, 3 KB per DrainIdleTimeout
		time.Sleep(100 * time.Millisecond)
		if n, _ := reader.Read(buf[:100]); n > 0 {
			got = append(got, buf[:n]...)
		}
	}
	if d := p.Dropped(); d > 0 {
		t.Fatalf("%d bytes dropped while the reader read %d in steady 100-byte steps", d, len(got))
	}
	select {
	case ok := <-drained:
		t.Fatalf("Drain returned %v while the reader was still reading", ok)
	default:
	}
	deadline := time.Now().Add(10 * time.Second)
	for len(got) < len(payload) && time.Now().Before(deadline) {
		n, err := reader.Read(buf)
		if n > 0 {
			got = append(got, buf[:n]...)
		} else if errors.Is(err, syscall.EAGAIN) {
			time.Sleep(time.Millisecond)
		}
	}
	if !bytes.Equal(got, payload) {
		t.Fatalf("the reader got %d bytes, want the %d written, in order (dropped %d)", len(got), len(payload), p.Dropped())
	}
	if !<-drained {
		t.Error("Drain gave up")
	}
}

// The same for a terminal's output relay (terminalStall), with the stall
// clock only.
func TestSlowReaderIsNoStalledReaderOfATerminal(t *testing.T) {
	reader, p, slave := terminalIntoFIFO(t, Env{StallTimeout: 300 * time.Millisecond})
	payload := make([]byte, 200<<10)
	for i := range payload {
		payload[i] = byte('a' + i%26) // no newline: a pty would add carriage returns
	}
	go slave.Write(payload)
	var got []byte
	buf := make([]byte, 64<<10)
	slowUntil := time.Now().Add(1500 * time.Millisecond)
	for time.Now().Before(slowUntil) { // 100 B every 100 ms: 300 B per stall timeout
		time.Sleep(100 * time.Millisecond)
		if n, _ := reader.Read(buf[:100]); n > 0 {
			got = append(got, buf[:n]...)
		}
	}
	if d := p.Dropped(); d > 0 {
		t.Fatalf("%d bytes dropped while the reader read %d in steady 100-byte steps", d, len(got))
	}
	deadline := time.Now().Add(10 * time.Second)
	for len(got) < len(payload) && time.Now().Before(deadline) {
		if n, _ := reader.Read(buf); n > 0 {
			got = append(got, buf[:n]...)
		} else {
			time.Sleep(time.Millisecond)
		}
	}
	if !bytes.Equal(got, payload) {
		t.Fatalf("the reader got %d bytes, want the %d written, in order (dropped %d)", len(got), len(payload), p.Dropped())
	}
}
