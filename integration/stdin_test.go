package integration

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/fifo"
	"golang.org/x/sys/unix"

	"github.com/example/containerd-shim-example-v2/integration/harness"
)

// Stdin 1: `ctr run` without -t passes its own stdin (a pipe) to the container; cat echoes
// it and exits once the pipe ends (ctr calls CloseIO when its stdin ends).
//
// The pipe is closed only after cat has echoed the data: ctr installs its CloseIO hook only
// after NewTask returned, so an input that ends earlier would never be closed (a ctr race,
// not the shim's).
func TestStdinCtrRunPipe(t *testing.T) {
	forEachFlavor(t, func(t *testing.T, d *harness.Daemon) {
		ctx, ns := d.NewNamespace(t)
		ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		const id, data = "in1", "data through stdin\nsecond line"
		cmd := d.CtrCmd(ctx, ctrRun(d, "--rm", harness.ImageName, id, "cat")...)
		stdin, err := cmd.StdinPipe()
		if err != nil {
			t.Fatal(err)
		}
		var stdout, stderr lockedBuffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Start(); err != nil {
			t.Fatalf("start ctr: %v", err)
		}
		if _, err := io.WriteString(stdin, data); err != nil {
			t.Fatalf("write to ctr's stdin: %v", err)
		}
		waitFor(t, 15*time.Second, "cat echoed the input", func() bool { return stdout.String() == data })
		stdin.Close()
		if err := cmd.Wait(); err != nil {
			t.Fatalf("ctr run cat: %v (context %v, stderr %q)", err, ctx.Err(), stderr.String())
		}
		if got := stdout.String(); got != data {
			t.Errorf("cat echoed %q, want %q", got, data)
		}
		expectNoLeftovers(t, d, ns, id)
	})
}

// Stdin 2: 20 MiB of random data through stdin, cat and stdout arrive intact.
func TestStdinLargeRoundTrip(t *testing.T) {
	const size = 20 << 20
	data := make([]byte, size)
	if _, err := rand.Read(data); err != nil {
		t.Fatal(err)
	}
	want := sha256.Sum256(data)
	forEachFlavor(t, func(t *testing.T, d *harness.Daemon) {
		ctx, ns := d.NewNamespace(t)
		ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
		defer cancel()
		const id = "in2"
		ctr := newContainer(t, ctx, d, id, []string{"cat"})
		src := &eofSignal{r: strings.NewReader(string(data)), done: make(chan struct{})}
		sum := sha256.New()
		var n countingWriter
		var stderr lockedBuffer
		task, statusC := startTask(t, ctx, ctr, cio.NewCreator(
			cio.WithStreams(src, io.MultiWriter(sum, &n), &stderr), cio.WithFIFODir(d.FIFODir)))
		progress := func() string {
			return fmt.Sprintf("the client handed %d of %d bytes to the stdin FIFO, cat echoed %d", src.Load(), size, n.Load())
		}
		stalled := func(what string) {
			t.Fatalf("%s: no progress for %v: %s (the shim's stdin or stdout relay stopped moving data)", what, stallLimit, progress())
		}

		waitProgress(ctx, src.done, func() int64 { return src.Load() + n.Load() }, func() { stalled("writing stdin") })
		// As ctr does: the client's copy ended, so close the shim's side of stdin too.
		if err := task.CloseIO(ctx, containerd.WithStdinCloser); err != nil {
			t.Fatalf("CloseIO: %v", err)
		}
		exited := make(chan struct{})
		var code uint32
		var werr error
		go func() {
			defer close(exited)
			select {
			case st := <-statusC:
				code, _, werr = st.Result()
			case <-ctx.Done():
				werr = ctx.Err()
			}
		}()
		waitProgress(ctx, exited, n.Load, func() { stalled("waiting for cat to exit after CloseIO") })
		if werr != nil {
			t.Fatalf("wait: %v (%s)", werr, progress())
		}
		if code != 0 {
			t.Errorf("cat exit status %d, want 0 (stderr %q)", code, stderr.String())
		}
		waitIO(t, "cat", task.IO())
		if _, err := task.Delete(ctx); err != nil {
			t.Errorf("delete: %v", err)
		}
		if n.Load() != size {
			t.Errorf("stdout: %d bytes, want %d", n.Load(), size)
		}
		if got := sum.Sum(nil); hex.EncodeToString(got) != hex.EncodeToString(want[:]) {
			t.Errorf("stdout sha256 %x, want %x (that of stdin)", got, want)
		}
		expectNoLeftovers(t, d, ns, id)
	})
}

// Stdin 3: only CloseIO ends a process's input. The client writes to the stdin FIFO,
// detaches (closes its writer), re-attaches and writes again: cat keeps running through
// that, echoes both parts, and exits only after CloseIO.
func TestStdinReattachUntilCloseIO(t *testing.T) {
	forEachFlavor(t, func(t *testing.T, d *harness.Daemon) {
		ctx, ns := d.NewNamespace(t)
		ctx, cancel := context.WithTimeout(ctx, 45*time.Second)
		defer cancel()
		const id = "in3"
		dir := t.TempDir()
		// stderr is given too: the stock runc shim cannot handle a stdout without a stderr.
		cfg := cio.Config{Stdin: filepath.Join(dir, "stdin"), Stdout: filepath.Join(dir, "stdout"), Stderr: filepath.Join(dir, "stderr")}
		for _, p := range []string{cfg.Stdin, cfg.Stdout, cfg.Stderr} {
			if err := unix.Mkfifo(p, 0o600); err != nil {
				t.Fatalf("mkfifo %s: %v", p, err)
			}
		}
		// Read stdout and stderr from the start; read ends are opened without waiting for the
		// shim.
		var out, errOut lockedBuffer
		outDone := readFIFO(t, ctx, cfg.Stdout, &out)
		errDone := readFIFO(t, ctx, cfg.Stderr, &errOut)

		ctr := newContainer(t, ctx, d, id, []string{"cat"})
		task, statusC := startTask(t, ctx, ctr, fixedFIFOs(cfg))
		exited := make(chan struct{})
		var code uint32
		go func() {
			select {
			case st := <-statusC:
				code = st.ExitCode()
			case <-ctx.Done():
			}
			close(exited)
		}()

		for i, part := range []string{"first", "second"} {
			writeAndDetach(t, ctx, cfg.Stdin, part)
			want := strings.Join([]string{"first", "second"}[:i+1], "")
			waitFor(t, 10*time.Second, "cat echoed "+want, func() bool { return out.String() == want })
			// Give a process that wrongly saw end-of-input time to exit.
			select {
			case <-exited:
				t.Fatalf("cat exited (status %d) after the client detached from stdin (part %d), before CloseIO", code, i+1)
			case <-time.After(300 * time.Millisecond):
			}
			expectRunning(t, ctx, task, "after the client detached from stdin")
		}

		if err := task.CloseIO(ctx, containerd.WithStdinCloser); err != nil {
			t.Fatalf("CloseIO: %v", err)
		}
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			t.Fatalf("cat did not exit within 10s of CloseIO")
		}
		if code != 0 {
			t.Errorf("cat exit status %d, want 0", code)
		}
		for name, done := range map[string]<-chan struct{}{"stdout": outDone, "stderr": errDone} {
			select {
			case <-done:
			case <-time.After(ioDrainTimeout):
				t.Fatalf("%s FIFO not closed by the shim within %v of the exit", name, ioDrainTimeout)
			}
		}
		if got := out.String(); got != "firstsecond" {
			t.Errorf("cat echoed %q, want %q (stderr %q)", got, "firstsecond", errOut.String())
		}
		if _, err := task.Delete(ctx); err != nil {
			t.Errorf("delete: %v", err)
		}
		expectNoLeftovers(t, d, ns, id)
	})
}

// readFIFO opens a FIFO's read end (without waiting for a writer) and copies it into w
// until EOF, which closes the returned channel. The FIFO is closed when the test ends.
func readFIFO(t *testing.T, ctx context.Context, path string, w io.Writer) <-chan struct{} {
	t.Helper()
	r, err := fifo.OpenFifo(ctx, path, syscall.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		t.Fatalf("open %s: %v", path, err)
	}
	t.Cleanup(func() { r.Close() })
	done := make(chan struct{})
	go func() {
		_, _ = io.Copy(w, r)
		close(done)
	}()
	return done
}

// writeAndDetach opens the stdin FIFO for writing as a client attaching would, writes s and
// closes it again.
func writeAndDetach(t *testing.T, ctx context.Context, path, s string) {
	t.Helper()
	octx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	w, err := fifo.OpenFifo(octx, path, syscall.O_WRONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		t.Fatalf("open stdin fifo for writing: %v", err)
	}
	if _, err := io.WriteString(w, s); err != nil {
		t.Fatalf("write %q to stdin: %v (is anyone reading the stdin FIFO?)", s, err)
	}
	if err := w.Close(); err != nil {
		t.Fatalf("close stdin writer: %v", err)
	}
}

// fixedFIFOs is a cio.Creator handing the shim FIFO paths the test manages itself.
func fixedFIFOs(cfg cio.Config) cio.Creator {
	return func(string) (cio.IO, error) { return fixedIO{cfg}, nil }
}

type fixedIO struct{ cfg cio.Config }

func (f fixedIO) Config() cio.Config { return f.cfg }
func (fixedIO) Cancel()              {}
func (fixedIO) Wait()                {}
func (fixedIO) Close() error         { return nil }

// eofSignal passes reads through to r, counts what was read and closes done when r is
// exhausted.
type eofSignal struct {
	r    io.Reader
	done chan struct{}
	once sync.Once
	n    atomic.Int64
}

func (e *eofSignal) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	e.n.Add(int64(n))
	if err == io.EOF {
		e.once.Do(func() { close(e.done) })
	}
	return n, err
}

func (e *eofSignal) Load() int64 { return e.n.Load() }

// stallLimit is how long a data transfer may make no progress at all before the test calls
// it stuck; a healthy transfer moves megabytes in that time.
const stallLimit = 10 * time.Second

// waitProgress waits until done is closed. It calls stalled when the counter returned by
// progress has not moved for stallLimit, or when ctx ends.
func waitProgress(ctx context.Context, done <-chan struct{}, progress func() int64, stalled func()) {
	last, lastMove := progress(), time.Now()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-done:
			return
		case <-ctx.Done():
			stalled()
			return
		case <-tick.C:
			if p := progress(); p != last {
				last, lastMove = p, time.Now()
			} else if time.Since(lastMove) > stallLimit {
				stalled()
				return
			}
		}
	}
}

// countingWriter counts bytes written to it (safe for one writer and other readers).
type countingWriter struct {
	mu sync.Mutex
	n  int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	c.mu.Lock()
	c.n += int64(len(p))
	c.mu.Unlock()
	return len(p), nil
}

func (c *countingWriter) Load() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n
}
