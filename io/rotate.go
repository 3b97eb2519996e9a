package io

// The capped file:// log (max-size, max-files): one file that becomes
// <path>.1 when the next record would not fit, written a whole record at a
// time by the relays of crilog.go.

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"
)

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
	// dir is the log's directory, open for its lock (lockLog) when the log
	// is capped; nil when it could not be opened or locked in time.
	dir *os.File
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
	r := &rotatingFile{opts: o, first: f, f: f, size: size, unused: make(chan struct{})}
	if o.MaxSize > 0 {
		r.dir, _ = os.Open(filepath.Dir(o.Path)) // nil: its writers go unordered
	}
	return r
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
		// The size check, a rotation and the write are one step for every
		// writer of the log, each with its own rotatingFile (a task and its
		// exec given one URI): see lockLog.
		if r.lockLog() {
			defer r.unlockLog()
		}
		// The size counted is the shim's own writes: a log rotator that
		// truncated the file (copytruncate) made it too large, and a
		// rotation of the near-empty file would push out the last rotated
		// one; another writer appending to the same file made it too
		// small. The file's own size decides (followPath reads it).
		r.followPath()
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

// followPath moves r to the file its path names, when that is another
// regular file than the one r writes: another writer of the log rotated it
// (the file r writes is <path>.1 now, and that writer's next rotation
// removes it, with whatever r wrote to it meanwhile), or a rotator outside
// the shim renamed it and made a new one (a reopen, which the shim is never
// asked for). A path that names nothing (renamed without a new file, or
// removed) is left alone: r writes on until the file is full, and rotate
// opens the path then. It sets r.size to the size of the file r writes
// then. Called under lockLog.
func (r *rotatingFile) followPath() {
	cur, err := r.f.Stat()
	if err != nil {
		return
	}
	r.size = cur.Size()
	st, err := os.Stat(r.opts.Path)
	if err != nil || !st.Mode().IsRegular() || os.SameFile(st, cur) {
		return
	}
	f, size, err := openLogSized(r.opts.Path, true)
	if err != nil {
		return // the next record tries again
	}
	r.f.Close()
	r.f, r.size = f, size
}

// rotate makes room for need bytes; writeRecord holds lockLog.
func (r *rotatingFile) rotate(need int64) error {
	p := r.opts.Path
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

// lockLog takes the lock that orders the writers of a capped log, and
// reports whether it holds it (unlockLog releases it). Several writers can share one log (a task and its
// exec given the same URI, each with its own rotatingFile and mu), and
// unordered, they lost records and broke the cap: two rotations at once
// both shifted the <path>.N chain (a rename onto <path>.2 replaced the
// file the other had just moved there), a writer went on into the file its
// sibling had renamed to <path>.1 until the sibling's next rotation removed
// it, both found room for a record and both appended, and with max-files=1
// the second truncation took the first writer's new record. The lock is an
// flock on the log's directory, held from the size check to the end of the
// write: it orders the writers of one shim (each has its own open of the
// directory) and of several.
//
// Another writer holds it for a write, a rotation for a millisecond or so.
// It is waited for at most rotationLockWait: something else holding an
// flock on the directory (a backup tool, say) must not stop the log, and
// with it the container blocked on a full pipe. A log whose lock was not
// had in time goes on unordered from then on, as before the lock.
func (r *rotatingFile) lockLog() bool {
	if r.dir == nil {
		return false
	}
	fd := int(r.dir.Fd())
	var deadline time.Time // set at the first refusal: no clock read while uncontended
	for backoff := 10 * time.Microsecond; ; backoff = min(2*backoff, time.Millisecond) {
		err := unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			return true
		}
		if deadline.IsZero() {
			deadline = time.Now().Add(rotationLockWait)
		}
		if err != unix.EWOULDBLOCK && err != unix.EINTR || time.Now().After(deadline) {
			slog.Warn("file:// log: its directory cannot be locked; its writers go on unordered", "path", r.opts.Path, "error", err)
			r.dir.Close()
			r.dir = nil
			return false
		}
		time.Sleep(backoff)
	}
}

// unlockLog releases what lockLog took; r.mu is held, so Close has not
// closed r.dir meanwhile.
func (r *rotatingFile) unlockLog() { _ = unix.Flock(int(r.dir.Fd()), unix.LOCK_UN) }

// rotationLockWait bounds lockLog's wait.
const rotationLockWait = time.Second

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
	if r.dir != nil {
		r.dir.Close()
		r.dir = nil
	}
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
