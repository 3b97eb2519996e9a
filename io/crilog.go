package io

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	stdio "io"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/containerd/errdefs"
)

// The CRI log format kubelet reads: one record per line,
//
//	<RFC3339Nano time> <stream> <tag> <content>
//
// where tag is F for a full line and P for a part of a line longer than
// MaxCRILine (the rest follows in later records).
const (
	tagFull    = "F"
	tagPartial = "P"
	// MaxCRILine is the longest content one record carries; longer lines
	// are split with the partial tag (containerd's CRI plugin uses 16 KiB).
	MaxCRILine = 16 << 10
)

// FileOptions are the query options of a file:// log URI:
//
//	file:///var/log/c.log?format=cri&max-size=10MiB&max-files=3&rate=1MiB
type FileOptions struct {
	Path     string
	CRI      bool  // format=cri; otherwise raw bytes are appended
	MaxSize  int64 // max-size: rotate before the file would exceed it; 0 = never
	MaxFiles int   // max-files: files kept, the live one included (default 2 with max-size)
	Rate     int64 // rate: bytes per second the log may grow by on average; 0 = unpaced
}

// ParseFileURI reads a file:// URI and its options.
func ParseFileURI(uri string) (FileOptions, error) {
	u, err := url.Parse(uri)
	if err != nil || u.Scheme != "file" || !filepath.IsAbs(u.Path) || !localHost(u.Host) {
		return FileOptions{}, fmt.Errorf("log URI %q: want file:///absolute/path[?options]: %w", uri, errdefs.ErrInvalidArgument)
	}
	o := FileOptions{Path: filepath.Clean(u.Path)}
	q := u.Query()
	for key := range q {
		switch key {
		case "format", "max-size", "max-files", "rate":
		default:
			return o, fmt.Errorf("log URI %q: unknown option %q (known: format, max-size, max-files, rate): %w", uri, key, errdefs.ErrInvalidArgument)
		}
	}
	switch f := q.Get("format"); f {
	case "", "raw":
	case "cri":
		o.CRI = true
	default:
		return o, fmt.Errorf("log URI %q: format %q (want raw or cri): %w", uri, f, errdefs.ErrInvalidArgument)
	}
	if s := q.Get("max-size"); s != "" {
		if o.MaxSize, err = parseSize(s); err != nil || o.MaxSize <= 0 {
			return o, fmt.Errorf("log URI %q: max-size %q: %w", uri, s, errdefs.ErrInvalidArgument)
		}
	}
	if s := q.Get("max-files"); s != "" {
		if o.MaxFiles, err = strconv.Atoi(s); err != nil || o.MaxFiles < 1 {
			return o, fmt.Errorf("log URI %q: max-files %q: %w", uri, s, errdefs.ErrInvalidArgument)
		}
	}
	if s := q.Get("rate"); s != "" {
		if o.Rate, err = parseSize(strings.TrimSuffix(s, "/s")); err != nil || o.Rate < MinLogRate {
			return o, fmt.Errorf("log URI %q: rate %q (bytes per second, at least %d): %w", uri, s, MinLogRate, errdefs.ErrInvalidArgument)
		}
	}
	if o.MaxSize > 0 && o.MaxFiles == 0 {
		o.MaxFiles = 2
	}
	if o.MaxSize > 0 && o.MaxSize < 2*MaxCRILine {
		return o, fmt.Errorf("log URI %q: max-size must be at least %d bytes: %w", uri, 2*MaxCRILine, errdefs.ErrInvalidArgument)
	}
	return o, nil
}

// localHost accepts the only hosts a local path URI may name: none, or
// "localhost". Anything else would be silently dropped by taking the path.
func localHost(host string) bool { return host == "" || host == "localhost" }

// parseSize reads sizes such as 4096, 10KiB, 10MiB, 1GiB, 10KB, 10MB, 10M.
func parseSize(s string) (int64, error) {
	units := []struct {
		suffix string
		mult   int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"KB", 1000}, {"MB", 1000 * 1000}, {"GB", 1000 * 1000 * 1000},
		{"K", 1 << 10}, {"M", 1 << 20}, {"G", 1 << 30}, {"B", 1}}
	mult := int64(1)
	for _, u := range units {
		if strings.HasSuffix(s, u.suffix) {
			s, mult = strings.TrimSuffix(s, u.suffix), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
	if err != nil {
		return 0, err
	}
	return n * mult, nil
}

// withPath is o naming path instead.
func withPath(o FileOptions, path string) FileOptions {
	o.Path = path
	return o
}

// relayRaw copies a stream's bytes into the file unchanged. A halt (h)
// stops it between two reads.
func (r *rotatingFile) relayRaw(src *os.File, moved, dropped *atomic.Uint64, h *halter) error {
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	if carry := h.takeCarry(); len(carry) > 0 {
		n, err := r.writeRecord(carry)
		if err != nil {
			return err
		}
		count(moved, dropped, n, len(carry))
	}
	for {
		if h.commit() {
			return errHalted
		}
		n, err := src.Read(*bp)
		if n > 0 {
			r.pace.wait(n, h.asked)
			written, werr := r.writeRecord((*bp)[:n])
			if werr != nil {
				return werr
			}
			count(moved, dropped, written, n)
		}
		if err != nil {
			if errors.Is(err, stdio.EOF) {
				return nil
			}
			if h.commit() {
				return errHalted
			}
			if errors.Is(err, os.ErrDeadlineExceeded) {
				continue // a halt's wake-up, the halt withdrawn meanwhile
			}
			return err
		}
	}
}

// relayCRI turns a stream into CRI log records. A halt (h) stops it between
// two records: the part of a line read so far and what the reader had
// buffered become h's carry, read first by the next relay.
func (r *rotatingFile) relayCRI(src *os.File, stream string, moved, dropped *atomic.Uint64, h *halter) error {
	var in stdio.Reader = src
	carried := bytes.NewReader(h.takeCarry())
	if carried.Len() > 0 {
		in = stdio.MultiReader(carried, src)
	}
	br := bufio.NewReaderSize(in, MaxCRILine)
	rec := make([]byte, 0, MaxCRILine+64)
	// halted hands on, in order: head (a line read so far), what the reader
	// holds, and what it has not yet taken of the carry it started with.
	halted := func(head []byte) error {
		rest, _ := br.Peek(br.Buffered())
		unread, _ := stdio.ReadAll(carried)
		h.carry = append(append(append([]byte(nil), head...), rest...), unread...)
		return errHalted
	}
	for {
		if h.commit() { // between two records
			return halted(nil)
		}
		// ReadSlice rather than ReadLine: ReadLine returns a line cut short
		// by an error (a halt's deadline) as if it were whole.
		raw, err := br.ReadSlice('\n')
		isPrefix := errors.Is(err, bufio.ErrBufferFull)
		if err != nil && !isPrefix && !errors.Is(err, stdio.EOF) && h.commit() {
			return halted(raw)
		}
		if len(raw) > 0 {
			rec = rec[:0]
			rec = time.Now().AppendFormat(rec, time.RFC3339Nano)
			rec = append(rec, ' ')
			rec = append(rec, stream...)
			rec = append(rec, ' ')
			tagAt := len(rec)
			rec = append(rec, tagFull...)
			rec = append(rec, ' ')
			rec = append(rec, trimLineEnd(raw)...)
			// Partial: cut at the line limit, or the stream's last bytes
			// without a line end (as containerd's CRI logger tags them, so
			// that kubelet adds no newline the process never wrote).
			partial := raw[len(raw)-1] != '\n'
			taken := len(raw) // the process's bytes this record stands for
			if isPrefix {
				// raw is the reader's buffer, which the look ahead refills.
				var ended int
				rec, ended = lineEndAfter(br, rec)
				partial, taken = ended == 0, taken+ended
			}
			if partial {
				copy(rec[tagAt:], tagPartial)
			}
			rec = append(rec, '\n')
			r.pace.wait(len(rec), h.asked)
			written, werr := r.writeRecord(rec)
			if werr != nil {
				return werr
			}
			// The process's bytes, line end included: delivered if the whole
			// record was, lost otherwise.
			if written == len(rec) {
				moved.Add(uint64(taken))
			} else {
				dropped.Add(uint64(taken))
			}
		}
		switch {
		case err == nil, isPrefix:
		case errors.Is(err, stdio.EOF):
			return nil
		case errors.Is(err, os.ErrDeadlineExceeded):
			// A halt's wake-up, the halt withdrawn meanwhile: what the
			// line had so far went out as a partial record.
		default:
			return err
		}
	}
}

// trimLineEnd is line without its "\n" or "\r\n".
func trimLineEnd(line []byte) []byte {
	if n := len(line); n > 0 && line[n-1] == '\n' {
		line = line[:n-1]
		if n := len(line); n > 0 && line[n-1] == '\r' {
			line = line[:n-1]
		}
	}
	return line
}

// lineEndAfter looks at what follows a line cut at the CRI limit, rec
// ending in its content. If that is the line's end ("\n", or "\r\n" with the
// \r either side of the cut), it takes it from br, drops a \r ending rec, and
// says how many bytes it took; otherwise it takes nothing and returns 0.
// containerd's CRI logger ends a record at the limit with the partial tag only
// when more of the line follows, so a line of exactly the limit is one full
// record, not a partial one and an empty full one. The look ahead waits for
// the next byte, as containerd's does; a failed read (a halt's wake-up, the
// stream's end) counts as more to follow.
func lineEndAfter(br *bufio.Reader, rec []byte) ([]byte, int) {
	next, err := br.Peek(1)
	if err != nil {
		return rec, 0
	}
	switch {
	case next[0] == '\n' && rec[len(rec)-1] == '\r':
		br.Discard(1)
		return rec[:len(rec)-1], 1
	case next[0] == '\n':
		br.Discard(1)
		return rec, 1
	case next[0] == '\r':
		if pair, err := br.Peek(2); err == nil && pair[1] == '\n' {
			br.Discard(2)
			return rec, 2
		}
	}
	return rec, 0
}

// count adds a raw write's outcome: written of n bytes delivered, the rest lost.
func count(moved, dropped *atomic.Uint64, written, n int) {
	moved.Add(uint64(written))
	if written < n {
		dropped.Add(uint64(n - written))
	}
}
