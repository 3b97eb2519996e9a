package daemonlog

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// bundle is a bundle directory with its `log` FIFO, and containerd's reading
// end of it (nil: nobody reads).
type bundle struct {
	dir    string
	reader *os.File
}

func newBundle(t *testing.T) *bundle {
	t.Helper()
	dir := t.TempDir()
	if err := unix.Mkfifo(filepath.Join(dir, "log"), 0o600); err != nil {
		t.Fatal(err)
	}
	b := &bundle{dir: dir}
	b.read(t)
	return b
}

// read opens the reading end, as containerd does when it serves the task.
func (b *bundle) read(t *testing.T) {
	t.Helper()
	r, err := os.OpenFile(filepath.Join(b.dir, "log"), os.O_RDONLY|unix.O_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	b.reader = r
	t.Cleanup(func() { r.Close() })
}

// stop closes the reading end, as containerd does once the task is deleted.
func (b *bundle) stop() { b.reader.Close() }

// got reads what the FIFO holds.
func (b *bundle) got(t *testing.T) string {
	t.Helper()
	buf := make([]byte, 4096)
	n, err := unix.Read(int(b.reader.Fd()), buf)
	if err == unix.EAGAIN {
		return ""
	}
	if err != nil {
		t.Fatal(err)
	}
	return string(buf[:max(n, 0)])
}

// sinkOn is a Sink whose "standard error" is a descriptor opened on b's FIFO,
// as `start` leaves the daemon's, following the bundles *live names.
func sinkOn(t *testing.T, b *bundle, live *liveSet) *Sink {
	t.Helper()
	fd, err := unix.Open(filepath.Join(b.dir, "log"), unix.O_WRONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	s := &Sink{fd: fd}
	s.Follow(live.list)
	return s
}

type liveSet struct {
	mu   sync.Mutex
	dirs []string
}

func (l *liveSet) set(bs ...*bundle) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.dirs = l.dirs[:0]
	for _, b := range bs {
		l.dirs = append(l.dirs, b.dir)
	}
}

func (l *liveSet) list() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.dirs)
}

func write(t *testing.T, s *Sink, text string) {
	t.Helper()
	if n, err := s.Write([]byte(text)); err != nil || n != len(text) {
		t.Fatalf("write %q: %d, %v", text, n, err)
	}
}

// The first task's FIFO is read no more (its reader went without the
// task's Delete): the record that found it so is lost, and the ones after it
// go to a FIFO that is read.
func TestWriteMovesOffAFIFONobodyReads(t *testing.T) {
	first, second := newBundle(t), newBundle(t)
	var live liveSet
	live.set(first, second)
	s := sinkOn(t, first, &live)
	write(t, s, "one\n")
	if got := first.got(t); got != "one\n" {
		t.Fatalf("first FIFO: %q", got)
	}
	first.stop()
	if _, err := s.Write([]byte("lost\n")); !errors.Is(err, unix.EPIPE) {
		t.Fatalf("write to a FIFO nobody reads: %v, want EPIPE", err)
	}
	waitMoved(t, s, second)
	write(t, s, "two\n")
	if got := second.got(t); got != "two\n" {
		t.Fatalf("second FIFO after the first lost its reader: %q", got)
	}
}

// waitMoved waits for the background search to have moved s to b.
func waitMoved(t *testing.T, s *Sink, b *bundle) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		s.mu.Lock()
		current := s.current
		s.mu.Unlock()
		if current == b.dir {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("standard error still on %q, want %s", current, b.dir)
		}
		time.Sleep(time.Millisecond)
	}
}

// The services log while holding the locks their bundle lists take: a write
// that finds its FIFO unread must not list them on the writer's goroutine.
func TestWriteUnderTheBundleListsLock(t *testing.T) {
	first, second := newBundle(t), newBundle(t)
	var servicesLock sync.Mutex
	var live liveSet
	live.set(first, second)
	fd, err := unix.Open(filepath.Join(first.dir, "log"), unix.O_WRONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	s := &Sink{fd: fd}
	s.Follow(func() []string {
		servicesLock.Lock()
		defer servicesLock.Unlock()
		return live.list()
	})
	first.stop()
	done := make(chan struct{})
	go func() {
		defer close(done)
		servicesLock.Lock()
		defer servicesLock.Unlock()
		_, _ = s.Write([]byte("logged by a service under its lock\n"))
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("a write under the bundle list's lock hung")
	}
	waitMoved(t, s, second)
}

// A task leaving moves the log before containerd stops reading its FIFO: a
// panic written straight to the descriptor afterwards is not lost.
func TestTaskGoneMovesBeforeTheReaderLeaves(t *testing.T) {
	first, second := newBundle(t), newBundle(t)
	var live liveSet
	live.set(first, second)
	s := sinkOn(t, first, &live)
	s.TaskGone() // another task left: the log stays where it is
	if _, err := unix.Write(s.fd, []byte("still\n")); err != nil {
		t.Fatal(err)
	}
	if got := first.got(t); got != "still\n" {
		t.Fatalf("first FIFO: %q", got)
	}
	live.set(second)
	s.TaskGone()
	if _, err := unix.Write(s.fd, []byte("panic: ...\n")); err != nil { // as the runtime writes it
		t.Fatal(err)
	}
	if got := second.got(t); got != "panic: ...\n" {
		t.Fatalf("second FIFO: %q (first: %q)", got, first.got(t))
	}
}

// Only a FIFO with a reader is taken: not a bundle whose FIFO nobody reads,
// not a regular file that happens to be named `log`. With none left, a write
// fails and nothing else happens.
func TestMovesOnlyToAFIFOThatIsRead(t *testing.T) {
	first, unread, plain, read := newBundle(t), newBundle(t), t.TempDir(), newBundle(t)
	unread.stop()
	if err := os.WriteFile(filepath.Join(plain, "log"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	var live liveSet
	live.set(unread, read)
	live.dirs = append(live.dirs, plain)
	s := sinkOn(t, first, &live)
	s.TaskGone()
	write(t, s, "here\n")
	if got := read.got(t); got != "here\n" {
		t.Fatalf("the read FIFO: %q", got)
	}
	if data, _ := os.ReadFile(filepath.Join(plain, "log")); len(data) != 0 {
		t.Fatalf("a regular file named log was written: %q", data)
	}
	read.stop()
	live.set(unread)
	if _, err := s.Write([]byte("lost\n")); err == nil {
		t.Fatal("a write with no FIFO read anywhere reported success")
	}
}

// Standard error that is no FIFO (/dev/null, when the bundle had no `log`) is
// left alone.
func TestTaskGoneLeavesOtherStandardErrorAlone(t *testing.T) {
	other := newBundle(t)
	f, err := os.CreateTemp(t.TempDir(), "stderr")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	s := &Sink{fd: int(f.Fd())}
	var live liveSet
	live.set(other)
	s.Follow(live.list)
	s.TaskGone()
	write(t, s, "kept\n")
	if data, _ := os.ReadFile(f.Name()); string(data) != "kept\n" {
		t.Fatalf("the file standard error was: %q", data)
	}
	if got := other.got(t); got != "" {
		t.Fatalf("moved to a bundle's FIFO: %q", got)
	}
}

// A record larger than the FIFO's room (a goroutine dump of a busy shim)
// reaches a reader that is there and reading, only a little behind the
// writer, whole: only a FIFO nobody empties may cost records.
func TestLargeRecordReachesALiveReaderWhole(t *testing.T) {
	b := newBundle(t)
	var live liveSet
	live.set(b)
	s := sinkOn(t, b, &live)
	record := []byte(strings.Repeat("x", 256<<10) + "\n")
	got := make(chan int, 1)
	go func() {
		total := 0
		buf := make([]byte, 4096)
		deadline := time.Now().Add(5 * time.Second)
		for total < len(record) && time.Now().Before(deadline) {
			n, _ := unix.Read(int(b.reader.Fd()), buf)
			if n > 0 {
				total += n
			}
			time.Sleep(100 * time.Microsecond) // a reader with other work to do
		}
		got <- total
	}()
	n, err := s.Write(record)
	if n != len(record) || err != nil {
		t.Errorf("write of a %d-byte record to a FIFO being read: %d written, %v", len(record), n, err)
	}
	if total := <-got; total != len(record) {
		t.Errorf("the reader got %d of %d bytes", total, len(record))
	}
}

// A FIFO whose reader does not read (containerd stopped) costs a writer one
// bounded wait, then none until a write goes through again.
func TestFullFIFOWaitsOnceThenDrops(t *testing.T) {
	b := newBundle(t)
	var live liveSet
	live.set(b)
	s := sinkOn(t, b, &live)
	big := []byte(strings.Repeat("y", 128<<10))
	began := time.Now()
	if _, err := s.Write(big); !errors.Is(err, unix.EAGAIN) {
		t.Fatalf("write to a FIFO nobody empties: %v, want EAGAIN", err)
	}
	if took := time.Since(began); took > 2*fullWait {
		t.Fatalf("first write to a full FIFO took %v", took)
	}
	began = time.Now()
	for i := 0; i < 100; i++ {
		_, _ = s.Write([]byte("more\n"))
	}
	if took := time.Since(began); took >= fullWait { // not one wait more
		t.Fatalf("writes to a FIFO found stalled took %v", took)
	}
	b.got(t) // room again
	write(t, s, "again\n")
}
