package io

import (
	"bytes"
	stdio "io"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// clientReads opens path for reading in blocking mode, as a client's FIFO
// library does in its own goroutine, and returns everything read until end
// of file; it fails the test if that does not happen within timeout (a
// reader that opened after the shim closed would wait forever).
func clientReads(t *testing.T, path string, timeout time.Duration) string {
	t.Helper()
	got := make(chan string, 1)
	go func() {
		f, err := os.OpenFile(path, os.O_RDONLY, 0)
		if err != nil {
			got <- "open: " + err.Error()
			return
		}
		defer f.Close()
		var b bytes.Buffer
		stdio.Copy(&b, f)
		got <- b.String()
	}()
	select {
	case s := <-got:
		return s
	case <-time.After(timeout):
		t.Fatalf("the client's reader of %s saw no end of file within %v", path, timeout)
		return ""
	}
}

// A client whose reader opens the FIFO only after the process has written
// and exited (a busy client whose FIFO goroutine ran late) still gets every
// byte and the end of file: the shim waits for a reader before writing.
func TestLateClientReaderGetsOutput(t *testing.T) {
	for _, c := range []struct{ name, payload string }{{"output", "out-3\n"}, {"no-output", ""}} {
		t.Run(c.name, func(t *testing.T) {
			path := mkfifo(t, "out")
			p, err := Open(Config{Stdout: path}, Env{})
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close()
			_, w, _ := p.RuntimeFiles()
			w.Write([]byte(c.payload))
			p.ReleaseRuntimeFiles() // the process exits
			time.Sleep(100 * time.Millisecond)
			if got := clientReads(t, path, 5*time.Second); got != c.payload {
				t.Errorf("late client read %q, want %q", got, c.payload)
			}
			if !p.Drain(5 * time.Second) {
				t.Error("relay did not finish after the client read everything")
			}
		})
	}
}

// No client within the attach bound: the relay goes on as for a stalled
// reader, and Close returns promptly; Close while still waiting does too.
// The bound is not the stall timeout: a policy that never discards still
// stops waiting for a client (a relay waiting forever could not be halted
// for an upgrade).
func TestClientFIFONoReader(t *testing.T) {
	for name, stall := range map[string]time.Duration{"stall 200ms": 200 * time.Millisecond, "never discard": -1} {
		path := mkfifo(t, "out-"+strings.ReplaceAll(name, " ", "-"))
		p, err := Open(Config{Stdout: path}, Env{StallTimeout: stall, AttachTimeout: 200 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		_, w, _ := p.RuntimeFiles()
		w.Write([]byte("nobody reads this\n"))
		p.ReleaseRuntimeFiles()
		if !p.Drain(5 * time.Second) {
			t.Errorf("%s: relay still waiting for a reader after the attach bound", name)
		}
		closed := make(chan struct{})
		go func() { p.Close(); close(closed) }()
		select {
		case <-closed:
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: Close hung", name)
		}
	}

	path := mkfifo(t, "out2")
	p, err := Open(Config{Stdout: path}, Env{AttachTimeout: -1}) // would wait forever
	if err != nil {
		t.Fatal(err)
	}
	closed := make(chan struct{})
	go func() { p.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("Close hung while waiting for a reader")
	}
}

// Out of descriptors, the shim cannot open the reader of its own that ends
// a wait for the client's reader. Close does not hang on that wait: it
// returns, and the ends are closed once the reader could be opened; the
// attach bound, likewise, is kept once it can.
func TestClientFIFOOutOfDescriptors(t *testing.T) {
	failures := make(chan struct{}, 100)
	openReader = func(path string, flag int) (*os.File, error) {
		select {
		case <-failures:
			return nil, &os.PathError{Op: "open", Path: path, Err: unix.EMFILE}
		default:
			return openIdle(path, flag)
		}
	}
	holdOpenRetry = 10 * time.Millisecond
	t.Cleanup(func() { openReader, holdOpenRetry = openIdle, 100*time.Millisecond })
	failFor := func(n int) {
		for range n {
			failures <- struct{}{}
		}
	}

	t.Run("close", func(t *testing.T) {
		f, err := openClientFIFO(mkfifo(t, "out"), "stdout", -1) // waits for a client
		if err != nil {
			t.Fatal(err)
		}
		failFor(5)
		closed := make(chan struct{})
		go func() { f.Close(); close(closed) }()
		select {
		case <-closed:
		case <-time.After(5 * time.Second):
			t.Fatal("Close hung: the wait for a reader could not be ended")
		}
		select {
		case <-f.released:
		case <-time.After(5 * time.Second):
			t.Fatal("the ends were not closed once a reader could be opened")
		}
	})
	t.Run("attach bound", func(t *testing.T) {
		failFor(5)
		f, err := openClientFIFO(mkfifo(t, "out"), "stdout", 50*time.Millisecond)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		ready := make(chan error, 1)
		go func() { _, err := f.ready(); ready <- err }()
		select {
		case err := <-ready:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("no reader: the wait outlasted its bound")
		}
	})
}
