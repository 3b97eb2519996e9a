package io

import (
	"bytes"
	stdio "io"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// haltThen halts p and either hands its stdio over to a new Pipes (the
// in-place upgrade) or runs the same relays again (an upgrade that did not
// happen). It returns the Pipes that goes on, and the export (nil for
// "restart").
func haltThen(t *testing.T, p *Pipes, mode string) (*Pipes, *PipesState) {
	t.Helper()
	if err := p.Halt(2 * time.Second); err != nil {
		t.Fatal(err)
	}
	if mode == "restart" {
		p.Restart()
		return p, nil
	}
	st, err := p.Export(keepDups{})
	if err != nil {
		t.Fatal(err)
	}
	next, err := ImportPipes(*st, adoptFD, Env{})
	if err != nil {
		t.Fatal(err)
	}
	p.Close()
	return next, st
}

// stdin read from a plain file, with the process not reading: the relay
// waits to write into the full pipe when the halt comes. The chunk in its
// hand goes over as the carry; the process then reads the whole file, in
// order, and end of file. (Before, the halt's wake-up ended the copy with an
// error: the process's stdin was closed with most of the file unread.)
func TestStdinFromAPlainFileHandedOver(t *testing.T) {
	for _, mode := range []string{"handover", "restart"} {
		t.Run(mode, func(t *testing.T) {
			payload := make([]byte, 1<<20)
			for i := range payload {
				payload[i] = byte(i*13 + i/509)
			}
			path := filepath.Join(t.TempDir(), "in")
			if err := os.WriteFile(path, payload, 0o644); err != nil {
				t.Fatal(err)
			}
			p, err := Open(Config{Stdin: path}, Env{})
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close()
			rin, _, _ := p.RuntimeFiles()
			procIn, err := dupFile(rin)
			if err != nil {
				t.Fatal(err)
			}
			defer procIn.Close()
			p.ReleaseRuntimeFiles()
			if err := p.Handable(); err != nil {
				t.Fatalf("stdin from a plain file: %v, want it handable", err)
			}
			waitFIFOFull(t, procIn) // the process reads nothing: the relay waits to write
			next, st := haltThen(t, p, mode)
			if st != nil {
				defer next.Close()
				if st.Stdin == nil || len(st.Stdin.Carry) == 0 {
					t.Fatal("the halted stdin relay handed over no chunk: the test did not halt it in a write")
				}
			}
			_ = procIn.SetReadDeadline(time.Now().Add(10 * time.Second))
			got, err := stdio.ReadAll(procIn)
			if err != nil {
				t.Fatalf("the process read %d of %d bytes, then: %v", len(got), len(payload), err)
			}
			if !bytes.Equal(got, payload) {
				t.Fatalf("the process read %d bytes, want the file's %d, in order", len(got), len(payload))
			}
		})
	}
}
