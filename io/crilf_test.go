package io

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// A CRLF line end is dropped whole even when the line is cut at the CRI
// line limit right between its \r and its \n: the \r must not stay behind
// at the end of the partial record (kubelet would show it as part of the
// line; containerd's CRI logger puts it back and drops the pair).
func TestCRILogCRLFAtTheLineLimit(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.log")
	p, err := Open(Config{Stdout: "file://" + path + "?format=cri"}, Env{})
	if err != nil {
		t.Fatal(err)
	}
	_, out, _ := p.RuntimeFiles()
	long := strings.Repeat("a", MaxCRILine-1)
	out.Write([]byte(long + "\r\nnext\r\n"))
	p.ReleaseRuntimeFiles()
	if !p.Drain(5 * time.Second) {
		t.Fatal("not drained")
	}
	p.Close()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if i := bytes.IndexByte(data, '\r'); i >= 0 {
		t.Fatalf("a \\r is in the log at byte %d of %d: %q", i, len(data), data[max(0, i-10):])
	}
	// What kubelet puts together: partial records joined, a full one ends a line.
	var lines []string
	var cur strings.Builder
	for _, r := range readRecords(t, path) {
		cur.WriteString(r.content)
		if r.tag == "F" {
			lines = append(lines, cur.String())
			cur.Reset()
		}
	}
	if len(lines) != 2 || lines[0] != long || lines[1] != "next" {
		t.Fatalf("lines %d: %.40q...", len(lines), lines)
	}
	if got, want := p.Moved(), uint64(len(long)+len("\r\nnext\r\n")); got != want {
		t.Errorf("moved %d bytes, want %d", got, want)
	}
}
