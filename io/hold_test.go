package io

import (
	"bytes"
	"errors"
	stdio "io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// openHeld opens held stdio whose stdout and stderr are FIFOs a client reads
// (as ctr and CRI do), and returns the client's readers.
func openHeld(t *testing.T) (*Pipes, *os.File, *os.File) {
	t.Helper()
	outPath, errPath := mkfifo(t, "out"), mkfifo(t, "err")
	outR, err := os.OpenFile(outPath, os.O_RDONLY|unix.O_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { outR.Close() })
	errR, err := os.OpenFile(errPath, os.O_RDONLY|unix.O_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { errR.Close() })
	p, err := Open(Config{Stdout: outPath, Stderr: errPath}, Env{HoldOutput: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p, outR, errR
}

// launchedProcess does what the process package's launch does once the
// runtime has started the process (the shim's copies of the runtime's ends
// go, held output is released) and returns the process's own stdout and
// stderr ends, as the container holds them.
func launchedProcess(t *testing.T, p *Pipes) (out, errw *os.File) {
	t.Helper()
	_, w, ew := p.RuntimeFiles()
	var err error
	if out, err = dupFile(w); err != nil {
		t.Fatal(err)
	}
	if errw, err = dupFile(ew); err != nil {
		t.Fatal(err)
	}
	p.ReleaseRuntimeFiles()
	p.Launched()
	return out, errw
}

// processStdin returns the process's end of its stdin pipe (a duplicate:
// the runtime's copies are released, as after a launch).
func processStdin(t *testing.T, p *Pipes) *os.File {
	t.Helper()
	rin, _, _ := p.RuntimeFiles()
	in, err := dupFile(rin)
	if err != nil {
		t.Fatal(err)
	}
	p.ReleaseRuntimeFiles()
	return in
}

// readFor reads what r (a FIFO, on the poller) has to give within d.
func readFor(r *os.File, d time.Duration) []byte {
	var got []byte
	buf := make([]byte, 4096)
	_ = r.SetReadDeadline(time.Now().Add(d))
	for {
		n, err := r.Read(buf)
		got = append(got, buf[:n]...)
		if err != nil && !errors.Is(err, stdio.EOF) {
			return got // the deadline
		}
		if n == 0 {
			time.Sleep(10 * time.Millisecond) // no writer (yet): EOF, not a wait
		}
	}
}

// The runtime's error, written to the process's stderr during a launch that
// failed, never reaches the client: Close drops it, as the stock shim does.
func TestHeldOutputDroppedWhenTheLaunchFails(t *testing.T) {
	p, outR, errR := openHeld(t)
	_, out, errf := p.RuntimeFiles()
	out.Write([]byte("runtime warning\n"))
	errf.Write([]byte(`exec: "nosuch": executable file not found in $PATH` + "\n"))
	if got := readFor(errR, 200*time.Millisecond); len(got) > 0 {
		t.Fatalf("stderr relayed before the launch was done: %q", got)
	}
	p.Close() // what the process package does after a failed launch
	if !p.Drain(2 * time.Second) {
		t.Fatal("the relays did not end after Close")
	}
	if got := append(readFor(outR, 100*time.Millisecond), readFor(errR, 100*time.Millisecond)...); len(got) > 0 {
		t.Errorf("the failed launch's output reached the client: %q", got)
	}
}

// Output written before Launched (the runtime's warnings, an exec that
// writes before the runtime returns) is held in the pipes, not lost, and
// relayed in order once the launch is done; after it output flows as usual.
func TestHeldOutputRelayedOnceLaunched(t *testing.T) {
	p, outR, _ := openHeld(t)
	_, out, _ := p.RuntimeFiles()
	early := bytes.Repeat([]byte("e"), 16<<10)
	out.Write(early)
	if err := p.Handable(); err == nil {
		t.Error("Handable before Launched: nil, want the process not started yet")
	}
	if got := readFor(outR, 200*time.Millisecond); len(got) > 0 {
		t.Fatalf("%d bytes relayed before Launched", len(got))
	}
	// As launch does: the runtime's copies go, then the hold.
	w, err := dupFile(out)
	if err != nil {
		t.Fatal(err)
	}
	p.ReleaseRuntimeFiles()
	p.Launched()
	w.Write([]byte("late\n"))
	w.Close() // the process exits
	var got bytes.Buffer
	deadline := time.Now().Add(5 * time.Second)
	for got.Len() < len(early)+5 && time.Now().Before(deadline) {
		got.Write(readFor(outR, 50*time.Millisecond))
	}
	if want := append(early, "late\n"...); !bytes.Equal(got.Bytes(), want) {
		t.Errorf("relayed %d bytes, want the %d held then the 5 written after Launched", got.Len(), len(want))
	}
	if !p.Drain(2 * time.Second) {
		t.Error("the relays did not end after the process's exit")
	}
}

// A launch that failed and is tried again with the same pipes (a restore)
// relays only what the attempt that succeeded wrote: DiscardHeld empties the
// pipes of the failed attempt's error, even more than one copy buffer of it,
// and keeps the hold on.
func TestDiscardHeldDropsAFailedAttemptsOutput(t *testing.T) {
	p, outR, errR := openHeld(t)
	_, out, errf := p.RuntimeFiles()
	errf.Write(bytes.Repeat([]byte("criu failed\n"), 5<<10)) // 60 KiB: fits in the pipe, over one copy buffer
	out.Write([]byte("first attempt's warning\n"))
	p.DiscardHeld()
	if own, _ := p.Queued(); own != 0 {
		t.Fatalf("%d bytes left in the pipes after DiscardHeld", own)
	}
	if got := readFor(errR, 100*time.Millisecond); len(got) > 0 {
		t.Fatalf("DiscardHeld released the hold: %q relayed", got)
	}
	errf.Write([]byte("second attempt\n"))
	w, err := dupFile(errf)
	if err != nil {
		t.Fatal(err)
	}
	p.ReleaseRuntimeFiles()
	p.Launched()
	w.Close()
	var got bytes.Buffer
	deadline := time.Now().Add(2 * time.Second)
	for got.Len() < len("second attempt\n") && time.Now().Before(deadline) {
		got.Write(readFor(errR, 50*time.Millisecond))
	}
	if got.String() != "second attempt\n" {
		t.Errorf("stderr relayed %d bytes (%.40q...), want only the successful attempt's", got.Len(), got.String())
	}
	if o := readFor(outR, 100*time.Millisecond); len(o) > 0 {
		t.Errorf("stdout relayed the failed attempt's %q", o)
	}
}

// Without HoldOutput (stdio not started by a runtime launch) output flows at
// once; Launched is then a no-op.
func TestUnheldOutputFlowsAtOnce(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "log")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	p, err := Open(Config{Stdout: path}, Env{})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	_, out, _ := p.RuntimeFiles()
	out.Write([]byte("now\n"))
	deadline := time.Now().Add(2 * time.Second)
	for {
		data, _ := os.ReadFile(path)
		if string(data) == "now\n" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("log holds %q, want the output written without a launch", data)
		}
		time.Sleep(10 * time.Millisecond)
	}
	p.Launched()
}
