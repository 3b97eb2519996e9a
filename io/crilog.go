package io

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	stdio "io"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"
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

// rotatingFile is a log file capped at maxSize bytes: when a record would
// overflow it, the file becomes path.1 (path.1 becomes path.2, ...; the
// oldest beyond maxFiles is removed) and a new file is started. Rotation
// happens only between whole records, under the same lock as writes, so no
// record is lost, split across files or written twice.
type rotatingFile struct {
	mu    sync.Mutex
	opts  FileOptions
	first *os.File // the file opened first; set once, read without mu (Close)
	f     *os.File
	size  int64
	users int // relays writing to it; the last to finish closes it
	// unused is closed when users drops to 0 (see awaitRelays); read
	// without mu, which a relay writing to a FIFO nobody reads holds.
	unused chan struct{}
	pace   *rateLimiter // nil unless the URI set rate=; shared by its writers
	// failing: the last write or rotation failed (and was logged); the next
	// record is tried all the same, and a success is logged too.
	failing bool
}

func openRotating(o FileOptions) (*rotatingFile, error) {
	f, size, err := openLogSized(o.Path, o.MaxSize > 0)
	if err != nil {
		return nil, err
	}
	rf := newRotatingFile(o, f, size)
	if o.Rate > 0 {
		rf.pace = newRateLimiter(o.Rate)
	}
	return rf, nil
}

// openLogSized opens a log as openLogFile does and returns its size. With
// rotating set, anything but a regular file is refused: rotation renames
// the file and makes a new one, which done to a device (file:///dev/null)
// would replace the host's node with a file.
func openLogSized(path string, rotating bool) (*os.File, int64, error) {
	f, err := openLogFile(path)
	if err != nil {
		return nil, 0, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, fmt.Errorf("stat log %s: %w", path, err)
	}
	if rotating && !st.Mode().IsRegular() {
		f.Close()
		return nil, 0, fmt.Errorf("log %s: max-size rotates by renaming, and this is not a regular file (%v): %w", path, st.Mode().Type(), errdefs.ErrInvalidArgument)
	}
	return f, st.Size(), nil
}

func newRotatingFile(o FileOptions, f *os.File, size int64) *rotatingFile {
	return &rotatingFile{opts: o, first: f, f: f, size: size, unused: make(chan struct{})}
}

// isFile says whether path leads to the file r writes now (checked before
// any write, so before any rotation).
func (r *rotatingFile) isFile(path string) bool {
	st, err := os.Stat(path)
	if err != nil {
		return false // not there, or not ours to see: openRotating says why
	}
	cur, err := r.f.Stat()
	return err == nil && os.SameFile(st, cur)
}

// withPath is o naming path instead.
func withPath(o FileOptions, path string) FileOptions {
	o.Path = path
	return o
}

// writeRecord appends one record, rotating first if it would not fit, and
// says how much of it was written. It fails only once the file is closed (the
// relay then stops). Any other failure (a full disk, a rotation refused)
// loses what was not written, and the next record is tried as if nothing had
// happened: one bad moment must not silence a container's log for the rest of
// its life (containerd's CRI logger goes on after a failed write too).
func (r *rotatingFile) writeRecord(rec []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var n int
	var err error
	if r.opts.MaxSize > 0 {
		// The size counted is the shim's own writes: a log rotator that
		// truncated the file (copytruncate) made it too large, and a
		// rotation of the near-empty file would push out the last rotated
		// one; another process of this shim appending to the same file
		// (a task and its exec with one log URI) made it too small. The
		// file's own size decides.
		if st, serr := r.f.Stat(); serr == nil {
			r.size = st.Size()
		}
		if r.size > 0 && r.size+int64(len(rec)) > r.opts.MaxSize {
			err = r.rotate(int64(len(rec)))
		}
	}
	if err == nil {
		n, err = r.f.Write(rec)
		r.size += int64(n)
		if err != nil && n > 0 && r.opts.CRI {
			n = r.dropStump(n)
		}
	}
	switch {
	case errors.Is(err, os.ErrClosed):
		return n, err
	case err != nil && !r.failing:
		r.failing = true
		slog.Warn("file:// log: output lost; the next record is tried", "path", r.opts.Path, "error", err)
	case err == nil && r.failing:
		r.failing = false
		slog.Info("file:// log written again", "path", r.opts.Path)
	}
	return n, nil
}

// dropStump cuts off the n bytes a CRI record left when the file took only
// part of it (a full disk): the next record would be glued to the stump and
// kubelet would read the two as one line. Truncating frees space, so it works
// on a full disk too. The end is taken from the file, not from r.size, which
// someone truncating the log (copytruncate) makes too large; cutting to it
// would extend the file with zeros. Returns the bytes of the record left.
func (r *rotatingFile) dropStump(n int) int {
	st, err := r.f.Stat()
	if err != nil || !st.Mode().IsRegular() || st.Size() < int64(n) {
		return n
	}
	if r.f.Truncate(st.Size()-int64(n)) != nil {
		return n
	}
	r.size -= int64(n)
	return 0
}

func (r *rotatingFile) rotate(need int64) error {
	p := r.opts.Path
	unlock := lockRotations(p)
	defer unlock()
	if !r.isFile(p) {
		// Someone else moved the file being written away (a log rotator
		// that renames, then creates a new one) or removed it: their
		// rotation stands. Renaming or truncating now would take what the
		// path names, not the file written, and throw away (or truncate) the
		// file holding the newest output. Write to what the path names.
		f, size, err := openLogSized(p, true)
		if err != nil {
			return fmt.Errorf("reopen: %w", err)
		}
		r.f.Close()
		r.f, r.size = f, size
		if r.size == 0 || r.size+need <= r.opts.MaxSize {
			return nil
		}
		// The new file is full too: rotate it as usual.
	}
	if r.opts.MaxFiles <= 1 {
		// Only one file allowed: start it afresh.
		if err := r.f.Truncate(0); err != nil {
			return fmt.Errorf("truncate log %s: %w", p, err)
		}
		r.size = 0
		return nil
	}
	// The next file is made first, under a name of its own: a rotation
	// that cannot open it (no descriptor left, no inode) changes nothing,
	// where renaming first left the shim writing into <path>.1, with no
	// <path>, and the next rotation removed <path>.1, the file written.
	next := p + ".next"
	_ = os.Remove(next) // a stale one: its bytes are not this log's
	f, err := openLogFile(next)
	if err != nil {
		return fmt.Errorf("rotate: %w", err)
	}
	_ = os.Remove(fmt.Sprintf("%s.%d", p, r.opts.MaxFiles-1))
	for i := r.opts.MaxFiles - 2; i >= 1; i-- {
		_ = os.Rename(fmt.Sprintf("%s.%d", p, i), fmt.Sprintf("%s.%d", p, i+1))
	}
	if err := os.Rename(p, p+".1"); err != nil && !errors.Is(err, os.ErrNotExist) {
		f.Close()
		_ = os.Remove(next)
		return fmt.Errorf("rotate log %s: %w", p, err)
	}
	// Renamed, or removed by someone else meanwhile: the new file either way.
	if err := os.Rename(next, p); err != nil {
		f.Close()
		_ = os.Remove(next)
		_ = os.Rename(p+".1", p) // the current file keeps its name
		return fmt.Errorf("rotate log %s: %w", p, err)
	}
	r.f.Close()
	r.f, r.size = f, 0
	return nil
}

// lockRotations takes the lock that orders the rotations of the logs in
// path's directory, and returns its release. Several writers can share one
// log (a task and its exec given the same URI, each with its own
// rotatingFile and lock), and rotations that overlap lose files: both shift
// the chain, and a rename onto <path>.2 that the other has just made
// replaces it; one removes the .next file the other has just made. The lock
// is an flock on the directory, which orders the writers of one shim (each
// takes it through its own open) and of several. Whoever comes second finds
// the path naming a new file and writes there (rotate's isFile check). A
// directory that cannot be locked leaves the rotation unordered, as before,
// rather than failing it.
func lockRotations(path string) (unlock func()) {
	dir, err := os.Open(filepath.Dir(path))
	if err != nil {
		return func() {}
	}
	for {
		err = unix.Flock(int(dir.Fd()), unix.LOCK_EX)
		if err != unix.EINTR {
			break
		}
	}
	if err != nil {
		dir.Close()
		return func() {}
	}
	return func() { dir.Close() } // closing the only descriptor releases the lock
}

// Close closes the current file (after a rotation, not the first one). The
// relays then fail their writes with os.ErrClosed and stop.
//
// The first file is closed before mu is taken: a record being written to a
// FIFO whose reader stopped reading (namesFIFO) blocks in Write holding mu,
// and closing the file is what wakes that Write. Only the first file can be
// a FIFO (rotation is refused for anything but a regular file); after a
// rotation it is closed already, and closing it again does nothing.
func (r *rotatingFile) Close() error {
	err := r.first.Close()
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.f == r.first {
		return err
	}
	return r.f.Close()
}

func (r *rotatingFile) release() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.users--
	if r.users == 0 {
		r.f.Close()
		select {
		case <-r.unused:
		default:
			close(r.unused)
		}
	}
}

// awaitRelays waits, at most timeout, until every relay writing to r has
// finished (released it). Pipes.Close asks it once it has closed their
// sources: a CRI relay still holds what it read of a line whose end never
// came (the process's last output without a line end, or a line cut at the
// limit, while a grandchild keeps the pipe open), and writes it as a
// partial record as its read fails. Closing the file first lost it. A
// relay that cannot finish (blocked writing to a FIFO nobody reads) is
// waited for only timeout: closing the file is what wakes it.
func (r *rotatingFile) awaitRelays(timeout time.Duration) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-r.unused:
	case <-t.C:
	}
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
