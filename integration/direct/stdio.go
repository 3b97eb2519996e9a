package direct

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/fifo"
)

// stdinWriteTimeout bounds one write to the stdin FIFO: it blocks until the
// shim has the FIFO open for reading, which it does at Create or Exec.
const stdinWriteTimeout = 10 * time.Second

// StdioConfig says which FIFOs a process gets.
type StdioConfig struct {
	Stdin bool // a stdin FIFO (else stdin is not connected)
	// Deferred opens stdout and stderr for reading at once (so the shim
	// finds a reader) but reads nothing before StartReading: the process's
	// output then waits in the pipes and FIFOs, as it does for a slow client.
	Deferred bool
}

// Stdio is a process's stdin, stdout and stderr as FIFOs the test creates,
// as ctr and CRI do: the shim opens them and never creates them. stdout and
// stderr are read into buffers until end-of-file, which the shim signals by
// closing its ends once the process's output is all delivered.
type Stdio struct {
	Stdin, Stdout, Stderr string // the paths for the request; Stdin "" when not connected

	mu    sync.Mutex
	stdin io.WriteCloser // the current writer; nil while detached

	out, err *stream
}

// NewStdio creates the FIFOs in a directory of the test and opens the
// client's ends the way containerd's cio does (non-blocking opens that
// complete once the shim opens the other end).
func NewStdio(t testing.TB, cfg StdioConfig) *Stdio {
	t.Helper()
	dir := t.TempDir()
	s := &Stdio{Stdout: filepath.Join(dir, "stdout"), Stderr: filepath.Join(dir, "stderr")}
	t.Cleanup(s.close)
	open := func(path string, flag int) io.ReadWriteCloser {
		f, err := fifo.OpenFifo(context.Background(), path, flag|syscall.O_CREAT|syscall.O_NONBLOCK, 0o700)
		if err != nil {
			t.Fatalf("open FIFO %s: %v", path, err)
		}
		return f
	}
	if cfg.Stdin {
		s.Stdin = filepath.Join(dir, "stdin")
		s.stdin = open(s.Stdin, syscall.O_WRONLY)
	}
	s.out = newStream(open(s.Stdout, syscall.O_RDONLY))
	s.err = newStream(open(s.Stderr, syscall.O_RDONLY))
	if !cfg.Deferred {
		s.StartReading()
	}
	return s
}

// StartReading starts reading stdout and stderr (once).
func (s *Stdio) StartReading() {
	s.out.start()
	s.err.start()
}

// Write writes to stdin through the current writer.
func (s *Stdio) Write(data string) error {
	s.mu.Lock()
	w := s.stdin
	s.mu.Unlock()
	if w == nil {
		return errors.New("stdin is detached (or not connected)")
	}
	done := make(chan error, 1)
	go func() {
		_, err := io.WriteString(w, data)
		done <- err
	}()
	select {
	case err := <-done:
		return err
	case <-time.After(stdinWriteTimeout):
		return fmt.Errorf("write to stdin FIFO blocked for %v (the shim never opened it?)", stdinWriteTimeout)
	}
}

// Detach closes the client's stdin writer, as a client that goes away does.
// The process must not see end-of-file: only CloseIO ends its input.
func (s *Stdio) Detach() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stdin == nil {
		return nil
	}
	err := s.stdin.Close()
	s.stdin = nil
	return err
}

// Reattach opens a new writer on the same stdin FIFO.
func (s *Stdio) Reattach() error {
	if s.Stdin == "" {
		return errors.New("stdin is not connected")
	}
	f, err := fifo.OpenFifo(context.Background(), s.Stdin, syscall.O_WRONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return fmt.Errorf("reopen stdin FIFO: %w", err)
	}
	s.mu.Lock()
	old := s.stdin
	s.stdin = f
	s.mu.Unlock()
	if old != nil {
		old.Close()
	}
	return nil
}

// StdoutSoFar and StderrSoFar return what was read so far.
func (s *Stdio) StdoutSoFar() string { return s.out.String() }
func (s *Stdio) StderrSoFar() string { return s.err.String() }

// Output waits for end-of-file on stdout and stderr and returns both; the
// test fails if the shim does not close them within timeout.
func (s *Stdio) Output(t testing.TB, timeout time.Duration) (stdout, stderr string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	stdout, err := s.out.waitEOF(deadline)
	if err != nil {
		t.Fatalf("stdout: %v (read so far %d bytes: %q)", err, len(stdout), clip(stdout))
	}
	stderr, err = s.err.waitEOF(deadline)
	if err != nil {
		t.Fatalf("stderr: %v (read so far %d bytes: %q)", err, len(stderr), clip(stderr))
	}
	return stdout, stderr
}

// WaitStdout waits until stdout contains substr.
func (s *Stdio) WaitStdout(t testing.TB, substr string, timeout time.Duration) string {
	t.Helper()
	out, ok := s.out.waitFor(func(b string, _ bool) bool { return strings.Contains(b, substr) }, time.Now().Add(timeout))
	if !ok {
		t.Fatalf("stdout does not show %q within %v; read %q", substr, timeout, clip(out))
	}
	return out
}

func (s *Stdio) close() {
	s.mu.Lock()
	if s.stdin != nil {
		s.stdin.Close()
		s.stdin = nil
	}
	s.mu.Unlock()
	for _, st := range []*stream{s.out, s.err} {
		if st != nil {
			st.close()
		}
	}
}

// stream reads one output FIFO until end-of-file.
type stream struct {
	f    io.ReadCloser
	once sync.Once
	mu   sync.Mutex
	cond *sync.Cond
	buf  bytes.Buffer
	eof  bool
	err  error
}

func newStream(f io.ReadCloser) *stream {
	s := &stream{f: f}
	s.cond = sync.NewCond(&s.mu)
	return s
}

func (s *stream) start() { s.once.Do(func() { go s.read() }) }

func (s *stream) read() {
	p := make([]byte, 64<<10)
	for {
		n, err := s.f.Read(p)
		s.mu.Lock()
		s.buf.Write(p[:n])
		if err != nil {
			s.eof = true
			if !errors.Is(err, io.EOF) {
				s.err = err
			}
		}
		s.cond.Broadcast()
		s.mu.Unlock()
		if err != nil {
			return
		}
	}
}

func (s *stream) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.String()
}

// waitFor waits until done(buffer, eof) holds or the deadline passes.
func (s *stream) waitFor(done func(string, bool) bool, deadline time.Time) (string, bool) {
	timer := time.AfterFunc(time.Until(deadline), func() {
		s.mu.Lock()
		s.cond.Broadcast()
		s.mu.Unlock()
	})
	defer timer.Stop()
	s.mu.Lock()
	defer s.mu.Unlock()
	for {
		if done(s.buf.String(), s.eof) {
			return s.buf.String(), true
		}
		if s.eof || time.Now().After(deadline) {
			return s.buf.String(), false
		}
		s.cond.Wait()
	}
}

func (s *stream) waitEOF(deadline time.Time) (string, error) {
	out, ok := s.waitFor(func(_ string, eof bool) bool { return eof }, deadline)
	if !ok {
		return out, errors.New("no end-of-file (the shim kept the FIFO open)")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil && !errors.Is(s.err, os.ErrClosed) {
		return out, s.err
	}
	return out, nil
}

func (s *stream) close() { s.f.Close() }

// clip shortens output for a failure message.
func clip(s string) string {
	if len(s) > 400 {
		return s[:200] + " ... " + s[len(s)-200:]
	}
	return s
}
