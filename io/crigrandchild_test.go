package io

import (
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// A process whose last output has no line end (a prompt, a progress
// counter, `printf done`), or ends with a line cut at the CRI limit, and
// that exits while a grandchild it started keeps its stdout open: the CRI
// relay holds that text while it waits for the rest of the line, Drain
// gives up (the pipe never reaches end of file) and Close ends the relay.
// What the process wrote before its exit must still reach the log, as a
// partial record, as under the stock shim, where containerd's CRI logger
// writes it once the shim closes the FIFO. Close closed the log file right
// after the pipe, while the relay, woken by the pipe's closing, was still
// writing that record: the record was lost (a race the relay lost about once
// in a hundred runs). Here the relay's write is held back (the log's lock)
// until Close has had its chance to close the file, every time.
func TestCRILogKeepsTheLastPartialLineWhenAGrandchildHoldsStdout(t *testing.T) {
	for _, tc := range []struct{ name, wrote string }{
		{"partial", "hello\npartial"},
		{"at-the-limit", "hello\n" + strings.Repeat("a", MaxCRILine)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for i := 0; i < 5; i++ {
				path := filepath.Join(t.TempDir(), "c.log")
				p, err := Open(Config{Stdout: "file://" + path + "?format=cri"}, Env{})
				if err != nil {
					t.Fatal(err)
				}
				var rf *rotatingFile
				for _, c := range p.toClose {
					if f, ok := c.(*rotatingFile); ok {
						rf = f
					}
				}
				_, out, _ := p.RuntimeFiles()
				grandchild, err := dupFile(out) // keeps stdout open after the process's exit
				if err != nil {
					t.Fatal(err)
				}
				out.Write([]byte(tc.wrote))
				p.ReleaseRuntimeFiles() // the process exits
				// The relay reads all there is and waits for more; Drain
				// would give up here after DrainIdleTimeout, and Delete
				// then closes.
				for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
					if own, _ := p.Queued(); own == 0 {
						time.Sleep(5 * time.Millisecond)
						break
					}
					if time.Now().After(deadline) {
						t.Fatal("the relay does not read")
					}
				}
				rf.mu.Lock()
				closed := make(chan struct{})
				go func() { p.Close(); close(closed) }()
				time.Sleep(20 * time.Millisecond)
				rf.mu.Unlock()
				select {
				case <-closed:
				case <-time.After(5 * time.Second):
					t.Fatal("Close hangs")
				}
				grandchild.Close()
				var got strings.Builder
				for _, r := range readRecords(t, path) {
					got.WriteString(r.content)
					if r.tag == "F" {
						got.WriteByte('\n')
					}
				}
				if got.String() != tc.wrote {
					t.Fatalf("run %d: the log holds %.40q (%d bytes), want %.40q (%d bytes)", i, got.String(), got.Len(), tc.wrote, len(tc.wrote))
				}
			}
		})
	}
}
