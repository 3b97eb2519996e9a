package integration

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/containerd/api/services/tasks/v1"
	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/oci"
	"github.com/containerd/fifo"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/example/containerd-shim-example-v2/integration/harness"
)

// Output stall policy of the shim under test: after this long without progress of the
// stdout FIFO's reader, the container's output is discarded (and counted, and logged) so
// the container is never frozen; it flows again once a reader drains.
const (
	stallPolicy  = 15 * time.Second
	stallLogLine = "output reader stalled; discarding output until it reads again"
	stallSlack   = 15 * time.Second // how much later than stallPolicy the container may resume
	// stallDeleteBound bounds Delete of an exited task whose stdout reader is gone.
	stallDeleteBound = 5 * time.Second
)

// The writer: numbered lines of ~200 bytes as fast as a throttled shell loop goes (about
// 0.5 MB/s, enough to fill pipe and FIFO buffers within a second), and the number of the
// last line written in /out/counter, a host directory bound into the container.
var stallWriterArgs = []string{"sh", "-c", `pad=$(printf '%0190d' 0); i=0
while :; do
  n=0
  while [ $n -lt 50 ]; do i=$((i+1)); n=$((n+1)); echo "$i $pad"; done
  echo $i > /out/counter
  usleep 20000
done`}

// Reliability 4: nobody reads stdout. A container writes continuously to its stdout FIFO
// (the test's own FIFOs); the test reads a little, then stops reading while keeping the
// FIFO open. While the stall is shorter than the policy the container is held back (nothing
// dropped); after it, the shim discards the output and logs it, and the container's counter
// moves again: it is not frozen. A second container of the same shim (group) stays usable
// (exec, state) throughout. Finally a new reader (the stalled one closed) receives new output.
// The stock runc shim blocks the container for as long as nobody reads (containerd#9342), so
// this fails for it by design.
//
// The two flavors run in parallel (the test mostly waits out the policy).
func TestStdoutReaderStalled(t *testing.T) {
	for _, flavor := range harness.AllFlavors {
		t.Run("containerd-"+flavor, func(t *testing.T) {
			t.Parallel()
			stdoutReaderStalled(t, daemonFor(t, flavor))
		})
	}
}

func stdoutReaderStalled(t *testing.T, d *harness.Daemon) {
	{
		outDir := t.TempDir() // removed after the namespace's containers, which write into it
		ctx, ns := d.NewNamespace(t)
		ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		defer cancel()
		group := "stall-" + harness.RandID(8)
		logOffset := d.LogSize()

		other := newContainer(t, ctx, d, "st-other", loopArgs, groupAnnotation(group))
		otherTask, _ := startTask(t, ctx, other, cio.NullIO)

		counterFile := filepath.Join(outDir, "counter")
		writer := newContainer(t, ctx, d, "st-writer", stallWriterArgs, groupAnnotation(group),
			oci.WithMounts([]specs.Mount{{Destination: "/out", Type: "bind", Source: outDir, Options: []string{"rbind", "rw"}}}))

		stdout, stderr := outputFIFOs(t, d, "stall-"+ns)
		readFIFO(t, ctx, stderr, io.Discard)
		first := openSequenceReader(t, ctx, stdout)

		writerTask, _ := startTask(t, ctx, writer, fixedFIFOs(cio.Config{Stdout: stdout, Stderr: stderr}))
		if shimPidFor(t, d, ns, "st-writer", "st-other") != shimPidFor(t, d, ns, "st-other", "st-other") {
			t.Fatalf("st-writer and st-other are not served by one shim")
		}
		counter := func() int { return readCounter(counterFile) }
		waitFor(t, 10*time.Second, "the reader receives 2000 lines", func() bool { return first.last() >= 2000 })

		// Stop reading; keep the FIFO open.
		first.pause()
		paused := time.Now()
		lastRead := first.last()
		t.Logf("reader paused after line %d", lastRead)

		// Within the policy's grace the container is held back, and the group's other
		// container is served normally.
		time.Sleep(3 * time.Second)
		held := counter()
		if code := runExecTimed(t, ctx, otherTask, "during-hold", 10*time.Second, "sh", "-c", "exit 4"); code != 4 {
			t.Errorf("exec in st-other while st-writer's reader stalls: exit code %d, want 4", code)
		}
		expectRunning(t, ctx, writerTask, "while its reader stalls")
		if harness.Runtime() == "io.example.v2" {
			// Where the output waits shows in the shim's introspection: the client's FIFO
			// is full, and so is the container's own pipe behind it.
			for _, task := range introspect(t, d.BundleDir(ns, "st-writer")).Tasks {
				if p := task.Processes[0]; task.ID == "st-writer" && (p.ClientQueued == 0 || p.Queued == 0) {
					t.Errorf("introspection while the reader stalls: %d bytes queued for the client, %d in the container's pipe; want both > 0", p.ClientQueued, p.Queued)
				}
			}
		}
		time.Sleep(time.Until(paused.Add(stallPolicy - 3*time.Second)))
		if c := counter(); c != held {
			t.Errorf("counter moved from %d to %d %v into the stall: output dropped (or buffered without bound) before the %v policy", held, c, time.Since(paused).Round(time.Second), stallPolicy)
		}
		t.Logf("container held back at line %d (%d lines past the last read)", held, held-lastRead)

		// After the policy's timeout the container runs again.
		var resumed time.Time
		if !eventually(stallPolicy+stallSlack-time.Since(paused), func() bool {
			if counter() > held+100 {
				resumed = time.Now()
				return true
			}
			return false
		}) {
			t.Fatalf("container frozen: counter still %d %v after its stdout reader stopped (policy %v)", counter(), time.Since(paused).Round(time.Second), stallPolicy)
		}
		t.Logf("container resumed %v after the reader stopped", resumed.Sub(paused).Round(100*time.Millisecond))
		if resumed.Sub(paused) < stallPolicy-time.Second {
			t.Errorf("output discarded %v after the reader stopped, before the %v policy", resumed.Sub(paused).Round(100*time.Millisecond), stallPolicy)
		}
		// And it stays unfrozen: the counter moves in each of three 2 s windows.
		for i, c1 := 0, counter(); i < 3; i++ {
			time.Sleep(2 * time.Second)
			c2 := counter()
			if c2 <= c1 {
				t.Errorf("counter stuck at %d %v after the reader stopped, though the shim had started discarding (it resumed at %v); the shim logged %q %d times",
					c2, time.Since(paused).Round(100*time.Millisecond), resumed.Sub(paused).Round(100*time.Millisecond),
					stallLogLine, strings.Count(d.LogSince(logOffset, 8<<20), stallLogLine))
				break
			}
			c1 = c2
		}
		if !eventually(5*time.Second, func() bool { return strings.Contains(d.LogSince(logOffset, 8<<20), stallLogLine) }) {
			t.Errorf("containerd's log (the shim's log) does not mention %q", stallLogLine)
		}
		if harness.Runtime() == "io.example.v2" {
			// The loss is counted where an operator can see it: the shim's introspection.
			dropped := map[string]uint64{}
			for _, task := range introspect(t, d.BundleDir(ns, "st-writer")).Tasks {
				dropped[task.ID] = task.Processes[0].DroppedBytes
			}
			if dropped["st-writer"] == 0 || dropped["st-other"] != 0 {
				t.Errorf("introspection: dropped output bytes %v, want some for st-writer and none for st-other", dropped)
			}
		}
		if code := runExecTimed(t, ctx, otherTask, "during-discard", 10*time.Second, "sh", "-c", "exit 6"); code != 6 {
			t.Errorf("exec in st-other while st-writer's output is discarded: exit code %d, want 6", code)
		}
		if code := runExecTimed(t, ctx, writerTask, "writer-exec", 10*time.Second, "sh", "-c", "exit 7"); code != 7 {
			t.Errorf("exec in st-writer while its output is discarded: exit code %d, want 7", code)
		}

		// A reader comes back (the stalled one is closed, a new one opened): it receives
		// new output, lines written after it arrived.
		first.close()
		atReturn := counter()
		second := openSequenceReader(t, ctx, stdout)
		if !eventually(10*time.Second, func() bool { return second.last() > atReturn+100 }) {
			t.Errorf("new reader: last line %d, want lines after %d (written after it opened) within 10s", second.last(), atReturn)
		} else {
			t.Logf("new reader receives output again: line %d (counter was %d when it opened)", second.last(), atReturn)
		}

		// Teardown with nobody reading: the last reader goes away while the container still
		// writes, then the container is killed. The exit is reported at once and Delete must
		// not wait for a reader that is gone (clients bound Delete: the harness's cleanup
		// allows harness.CallTimeout, and a Delete that times out leaves the shim behind).
		second.close()
		time.Sleep(2 * time.Second)
		statusC, err := writerTask.Wait(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := writerTask.Kill(ctx, syscall.SIGKILL); err != nil {
			t.Fatalf("kill st-writer: %v", err)
		}
		if code := exitCodeWithin(t, ctx, statusC, 10*time.Second); code != 137 {
			t.Errorf("st-writer: exit code %d after SIGKILL, want 137", code)
		}
		dctx, dcancel := context.WithTimeout(ctx, 30*time.Second)
		start := time.Now()
		_, err = d.Client().TaskService().Delete(dctx, &tasks.DeleteTaskRequest{ContainerID: "st-writer"})
		dcancel()
		took := time.Since(start)
		if err != nil {
			t.Errorf("Delete of st-writer (exited, no stdout reader): %v after %v", err, took.Round(time.Millisecond))
		} else if took > stallDeleteBound {
			t.Errorf("Delete of st-writer (exited, no stdout reader) took %v, want < %v: it waits for the output relay to a reader that is gone until the %v stall policy fires", took.Round(time.Millisecond), stallDeleteBound, stallPolicy)
		}
	}
}

// runExecTimed runs an exec like runExec but bounded by timeout, so a wedged shim fails
// the test instead of hanging it.
func runExecTimed(t *testing.T, ctx context.Context, task containerd.Task, execID string, timeout time.Duration, args ...string) uint32 {
	t.Helper()
	ectx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	return runExec(t, ectx, task, execID, args...)
}

// exitCodeWithin is exitCode bounded by timeout.
func exitCodeWithin(t *testing.T, ctx context.Context, statusC <-chan containerd.ExitStatus, timeout time.Duration) uint32 {
	t.Helper()
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	return exitCode(t, wctx, statusC)
}

// A quiet spell is not a stalled reader: a container that says nothing for longer than the
// stall policy (15 s) and then writes gets every line through, on both streams. (The policy's
// clock must run only while output waits for a reader, not while the shim waits for output.)
// The two flavors run in parallel.
func TestQuietSpellKeepsOutput(t *testing.T) {
	for _, flavor := range harness.AllFlavors {
		t.Run("containerd-"+flavor, func(t *testing.T) {
			t.Parallel()
			d := daemonFor(t, flavor)
			ctx, ns := d.NewNamespace(t)
			ctx, cancel := context.WithTimeout(ctx, time.Minute)
			defer cancel()
			stdout, stderr, code, err := d.Ctr(ctx, ctrRun(d, "--rm", harness.ImageName, "quiet",
				"sh", "-c", "echo early; sleep 16; echo late; echo late-err >&2; exit 4")...)
			if err != nil || code != 4 {
				t.Fatalf("ctr run: code %d err %v stderr %q", code, err, stderr)
			}
			if stdout != "early\nlate\n" || withoutCtrLog(stderr) != "late-err\n" {
				t.Errorf("after a 16 s quiet spell: stdout %q stderr %q, want %q and %q", stdout, withoutCtrLog(stderr), "early\nlate\n", "late-err\n")
			}
			expectNoLeftovers(t, d, ns, "quiet")
		})
	}
}

// readCounter reads the number stallWriterArgs' shell writes with `echo $i > counter`,
// which truncates before it writes: a read in between sees it empty, so it reads again.
func readCounter(path string) int {
	for range 100 {
		data, _ := os.ReadFile(path)
		if n, err := strconv.Atoi(strings.TrimSpace(string(data))); err == nil {
			return n
		}
		time.Sleep(2 * time.Millisecond)
	}
	return 0
}

// sequenceReader reads numbered lines ("<n> ...") from a FIFO and counts the gaps in
// their sequence; pause stops reading (the FIFO stays open), resume reads on, close
// closes the FIFO.
type sequenceReader struct {
	mu      sync.Mutex
	cond    *sync.Cond
	paused  bool
	closed  bool
	lastN   int
	nGaps   int
	lastGap string

	closeFile func() error
	closeOnce sync.Once
}

func openSequenceReader(t *testing.T, ctx context.Context, path string) *sequenceReader {
	t.Helper()
	f, err := fifo.OpenFifo(ctx, path, syscall.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		t.Fatalf("open %s: %v", path, err)
	}
	r := &sequenceReader{}
	r.cond = sync.NewCond(&r.mu)
	r.closeFile = f.Close
	t.Cleanup(r.close)
	go func() {
		br := bufio.NewReaderSize(f, 4096)
		for {
			r.mu.Lock()
			for r.paused && !r.closed {
				r.cond.Wait()
			}
			closed := r.closed
			r.mu.Unlock()
			if closed {
				return
			}
			line, err := br.ReadString('\n')
			if n, perr := strconv.Atoi(strings.SplitN(line, " ", 2)[0]); perr == nil && strings.HasSuffix(line, "\n") {
				r.mu.Lock()
				if r.lastN > 0 && n != r.lastN+1 {
					r.lastGap = fmt.Sprintf("line %d after line %d", n, r.lastN)
					r.nGaps++
				}
				r.lastN = n
				r.mu.Unlock()
			}
			if err != nil {
				return
			}
		}
	}()
	return r
}

func (r *sequenceReader) last() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.lastN
}

// gaps returns how many gaps the sequence had so far, and the last one.
func (r *sequenceReader) gaps() (int, string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.nGaps, r.lastGap
}

func (r *sequenceReader) pause() {
	r.mu.Lock()
	r.paused = true
	r.mu.Unlock()
}

func (r *sequenceReader) resume() {
	r.mu.Lock()
	r.paused = false
	r.cond.Broadcast()
	r.mu.Unlock()
}

func (r *sequenceReader) close() {
	r.closeOnce.Do(func() {
		r.mu.Lock()
		r.closed = true
		r.cond.Broadcast()
		r.mu.Unlock()
		r.closeFile()
	})
}

// outputFIFOs makes a stdout and a stderr FIFO in a directory of d's named dir, removed
// when the test ends.
func outputFIFOs(t *testing.T, d *harness.Daemon, dir string) (stdout, stderr string) {
	t.Helper()
	fifoDir := filepath.Join(d.FIFODir, dir)
	if err := os.MkdirAll(fifoDir, 0o700); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(fifoDir) })
	stdout, stderr = filepath.Join(fifoDir, "stdout"), filepath.Join(fifoDir, "stderr")
	for _, p := range []string{stdout, stderr} {
		if err := syscall.Mkfifo(p, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return stdout, stderr
}
