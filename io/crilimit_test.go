package io

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// A line exactly as long as the CRI limit (or a multiple of it) gets the
// records containerd's CRI logger gives it: a partial record only when more
// of the line follows, so the line's last part is one full record, not a
// partial one followed by an empty full one.
func TestCRILineAtTheLimitEndsInOneFullRecord(t *testing.T) {
	a := strings.Repeat("a", MaxCRILine)
	b := strings.Repeat("b", MaxCRILine)
	c := strings.Repeat("c", MaxCRILine)
	d := strings.Repeat("d", MaxCRILine-1) + "\r" // a \r that is content
	e := strings.Repeat("e", MaxCRILine)
	input := a + "\n" + b + c + "\n" + strings.Repeat("x", MaxCRILine) + "\r\n" + d + "z\n" + e
	want := []record{
		{"stdout", "F", a},
		{"stdout", "P", b},
		{"stdout", "F", c},
		{"stdout", "F", strings.Repeat("x", MaxCRILine)},
		{"stdout", "P", d},
		{"stdout", "F", "z"},
		{"stdout", "P", e}, // the stream's end without a line end
	}
	got, moved := criRecordsOf(t, []byte(input))
	if len(got) != len(want) {
		t.Fatalf("%d records, want %d: %s", len(got), len(want), summary(got))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("record %d: %s, want %s", i, summary(got[i:i+1]), summary(want[i:i+1]))
		}
	}
	if got, want := moved, uint64(len(input)); got != want {
		t.Errorf("moved %d bytes, want %d", got, want)
	}
}

// criRecordsOf runs a process's stdout, written in one go, through a CRI
// format file:// log, and returns the records and the bytes it moved.
func criRecordsOf(t *testing.T, stdout []byte) ([]record, uint64) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "c.log")
	p, err := Open(Config{Stdout: "file://" + path + "?format=cri"}, Env{})
	if err != nil {
		t.Fatal(err)
	}
	_, out, _ := p.RuntimeFiles()
	go func() {
		out.Write(stdout)
		p.ReleaseRuntimeFiles()
	}()
	if !p.Drain(10 * time.Second) {
		t.Fatal("not drained")
	}
	p.Close()
	return readRecords(t, path), p.Moved()
}

// summary names records by tag, length and first byte.
func summary(rs []record) string {
	var s []string
	for _, r := range rs {
		first := ""
		if r.content != "" {
			first = r.content[:1]
		}
		s = append(s, fmt.Sprintf("%s %d×%q", r.tag, len(r.content), first))
	}
	return strings.Join(s, ", ")
}

// The records match containerd's CRI logger's for streams built around the
// line limit: runs of content just under, at and over one and two limits,
// each ended by nothing, \r, \n, \r\n or \r\r\n.
func TestCRIRecordsAsContainerdCutsThem(t *testing.T) {
	seed := time.Now().UnixNano()
	rng := rand.New(rand.NewPCG(uint64(seed), 0))
	runs := []int{0, 1, 2, MaxCRILine - 2, MaxCRILine - 1, MaxCRILine, MaxCRILine + 1, 2*MaxCRILine - 1, 2 * MaxCRILine}
	ends := []string{"", "\r", "\n", "\r\n", "\r\r\n"}
	for i := 0; i < 60; i++ {
		var in []byte
		for range 1 + rng.IntN(6) {
			in = append(in, strings.Repeat(string(rune('a'+rng.IntN(26))), runs[rng.IntN(len(runs))])...)
			in = append(in, ends[rng.IntN(len(ends))]...)
		}
		got, _ := criRecordsOf(t, in)
		want := containerdRecords(in)
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("seed %d, case %d, input %d bytes:\n got %s\nwant %s", seed, i, len(in), summary(got), summary(want))
		}
	}
}

// containerdRecords is what containerd's CRI logger (internal/cri/io/
// logger.go: redirectLogs and its readLine) writes for a stream, restated:
// lines are read through a reader of the limit's size; a \r that fills the
// reader is put back so that a \r\n is never split; a record with the
// partial tag is cut only once the line has more than the limit; and the
// stream's last bytes without a line end are partial.
func containerdRecords(stream []byte) []record {
	br := bufio.NewReaderSize(bytes.NewReader(stream), MaxCRILine)
	var out []record
	var line []byte
	for {
		raw, err := br.ReadSlice('\n')
		goesOn := errors.Is(err, bufio.ErrBufferFull)
		switch n := len(raw); {
		case goesOn && raw[n-1] == '\r':
			br.UnreadByte()
			raw = raw[:n-1]
		case err == nil && n > 1 && raw[n-2] == '\r':
			raw = raw[:n-2]
		case err == nil:
			raw = raw[:n-1]
		}
		line = append(line, raw...)
		if err != nil && !goesOn && len(line) == 0 {
			return out
		}
		if len(line) > MaxCRILine {
			out = append(out, record{"stdout", "P", string(line[:MaxCRILine])})
			line = append([]byte(nil), line[MaxCRILine:]...)
		}
		switch {
		case goesOn:
		case err != nil:
			return append(out, record{"stdout", "P", string(line)})
		default:
			out = append(out, record{"stdout", "F", string(line)})
			line = nil
		}
	}
}
