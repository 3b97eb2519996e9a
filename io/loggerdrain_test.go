package io

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/example/containerd-shim-example-v2/internal/fdtest"
)

// writeWithin writes n bytes to w, failing the test if the write fails
// (EPIPE: a real process would get SIGPIPE) or blocks for d.
func writeWithin(t *testing.T, w *os.File, n int, d time.Duration, what string) {
	t.Helper()
	done := make(chan error, 1)
	go func() { _, err := w.Write(bytes.Repeat([]byte("x"), n)); done <- err }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("%s: write failed (a process would die of SIGPIPE): %v", what, err)
		}
	case <-time.After(d):
		t.Fatalf("%s: write of %d bytes still blocked after %s", what, n, d)
	}
}

// openWithLogger opens a process's stdout and stderr on one binary://
// logger, the shell script given.
func openWithLogger(t *testing.T, script string) *Pipes {
	t.Helper()
	uri := "binary://" + writeScript(t, script)
	p, err := Open(Config{Stdout: uri, Stderr: uri}, Env{ProcessID: "c", Namespace: "n", Spawn: spawnPlain(t)})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// awaitLoggerExit waits up to 5 s for the logger's exit to be reported.
func awaitLoggerExit(t *testing.T, p *Pipes) {
	t.Helper()
	select {
	case <-p.loggerExit:
	case <-time.After(5 * time.Second):
		t.Fatal("the logger did not exit")
	}
}

// awaitLogged waits up to 5 s for the logger to have written n bytes to out.
func awaitLogged(t *testing.T, p *Pipes, out string, n int64) {
	t.Helper()
	var size int64
	for deadline := time.Now().Add(5 * time.Second); size != n; time.Sleep(10 * time.Millisecond) {
		if st, err := os.Stat(out); err == nil {
			size = st.Size()
		}
		if size != n && time.Now().After(deadline) {
			t.Fatalf("the logger got %d bytes, want %d (the shim dropped %d)", size, n, p.Dropped())
		}
	}
}

// A logger that exits while the process runs (it crashed) must not take the
// process with it: its writes go on, without SIGPIPE and without blocking
// once the pipe is full, and what nobody reads counts as dropped.
func TestLoggerExitingEarlyDoesNotKillTheProcess(t *testing.T) {
	p := openWithLogger(t, "exec 5>&-\nhead -c 3 <&3 >/dev/null\n")
	_, w, ew := p.RuntimeFiles()
	// The logger's two pipes: only descriptors on them are counted at the
	// end (others close in the background after earlier tests).
	pipes := map[string]bool{fdtest.Target(t, w): true, fdtest.Target(t, ew): true}
	writeWithin(t, w, 3, 5*time.Second, "stdout, read by the logger")
	awaitLoggerExit(t, p)
	writeWithin(t, w, 256<<10, 5*time.Second, "stdout after the logger exited")
	writeWithin(t, ew, 256<<10, 5*time.Second, "stderr after the logger exited")
	p.ReleaseRuntimeFiles() // the process exits: the shim reads to the end
	deadline := time.Now().Add(5 * time.Second)
	for p.Dropped() != 512<<10 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if got := p.Dropped(); got != 512<<10 {
		t.Errorf("dropped %d bytes, want %d", got, 512<<10)
	}
	if !p.Drain(5 * time.Second) {
		t.Fatal("not drained")
	}
	p.Close()
	if n := fdtest.CountWhere(t, func(target string) bool { return pipes[target] }); n != 0 {
		t.Errorf("%d descriptors still open on the logger's pipes after Close", n)
	}
}

// A logger that closes the stderr pipe it does not want: the process's
// stderr writes neither kill it nor block it, and its stdout still reaches
// the logger.
func TestLoggerNotReadingStderr(t *testing.T) {
	out := filepath.Join(t.TempDir(), "out")
	p := openWithLogger(t, "exec 4<&- 5>&-\ncat <&3 >"+out+"\n")
	defer p.Close()
	_, w, ew := p.RuntimeFiles()
	writeWithin(t, ew, 256<<10, 5*time.Second, "stderr nobody wants")
	writeWithin(t, w, 4, 5*time.Second, "stdout")
	p.ReleaseRuntimeFiles()
	if !p.Drain(5 * time.Second) {
		t.Fatal("not drained")
	}
	if got, _ := os.ReadFile(out); string(got) != "xxxx" {
		t.Errorf("logger got %q", got)
	}
}

// A logger that daemonizes (exits at its ready signal, its children read
// on) keeps every byte: the shim's own read ends never compete with it.
func TestDaemonizedLoggerGetsEveryByte(t *testing.T) {
	out := filepath.Join(t.TempDir(), "out")
	p := openWithLogger(t, "cat <&3 >"+out+" 4<&- 5>&- &\nexit 0\n")
	defer p.Close()
	_, w, _ := p.RuntimeFiles()
	writeWithin(t, w, 1<<20, 10*time.Second, "stdout")
	p.ReleaseRuntimeFiles()
	awaitLogged(t, p, out, 1<<20)
}

// Delete's Drain does not wait for a logger that ends only on SIGTERM (as
// containerd's own loggers do) once it has read everything: the stock shim
// closes the pipes and signals it at once. Drain used to wait for its exit,
// which only Close's SIGTERM brings, for the whole of its timeout.
func TestDrainDoesNotWaitForALoggerThatEndsOnSIGTERM(t *testing.T) {
	out := filepath.Join(t.TempDir(), "out")
	p := openWithLogger(t, "trap 'exit 0' TERM\ncat <&3 >"+out+" 4<&- 5>&- &\n"+
		"cat <&4 >/dev/null 3<&- 5>&- &\nexec 5>&- 3<&- 4<&-\nwhile :; do sleep 0.05; done\n")
	_, w, _ := p.RuntimeFiles()
	w.Write([]byte("hello\n"))
	p.ReleaseRuntimeFiles()
	start := time.Now()
	if !p.Drain(10 * time.Second) {
		t.Error("not drained")
	}
	p.Close()
	if d := time.Since(start); d > 6*time.Second {
		t.Errorf("Delete's Drain and Close took %s for a logger that had read everything", d)
	}
	if b, _ := os.ReadFile(out); string(b) != "hello\n" {
		t.Errorf("logger got %q", b)
	}
}

// What is still in the logger's pipes is the logger's to read: Drain waits
// for it to be read before Close's SIGTERM, which this logger obeys at once
// (it starts reading later than LoggerEndGrace).
func TestDrainWaitsForTheLoggerToReadWhatIsQueued(t *testing.T) {
	out := filepath.Join(t.TempDir(), "out")
	p := openWithLogger(t, "trap 'exit 0' TERM\nexec 5>&-\nsleep 2\ncat <&3 >"+out+" 4<&-\n"+
		"while :; do sleep 0.05; done\n")
	_, w, _ := p.RuntimeFiles()
	w.Write([]byte("hello\n"))
	p.ReleaseRuntimeFiles()
	if !p.Drain(10 * time.Second) {
		t.Error("not drained")
	}
	p.Close()
	if b, _ := os.ReadFile(out); string(b) != "hello\n" {
		t.Errorf("logger got %q", b)
	}
}

// A logger that ends by itself soon after end of file (most copy until then)
// is let finish: Drain's early return does not SIGTERM it in the middle of
// writing what it read.
func TestDrainLetsALoggerEndingAtEndOfFileFinish(t *testing.T) {
	out := filepath.Join(t.TempDir(), "out")
	p := openWithLogger(t, "exec 5>&-\ncat <&3 >/dev/null 4<&-\nsleep 0.3\necho flushed >"+out+"\n")
	p.ReleaseRuntimeFiles()
	if !p.Drain(10 * time.Second) {
		t.Error("not drained")
	}
	p.Close()
	if b, _ := os.ReadFile(out); string(b) != "flushed\n" {
		t.Errorf("the logger was stopped before it had finished (got %q)", b)
	}
}

// A logger that exits some time after its ready signal, leaving a child to
// read, keeps every byte: its exit drains the pipes only once its process
// group is empty. The shim used to read them at the exit, in competition
// with the child, and dropped most of a megabyte.
func TestLoggerExitingAfterReadyLeavingAReaderLosesNothing(t *testing.T) {
	out := filepath.Join(t.TempDir(), "out")
	p := openWithLogger(t, "cat <&3 >"+out+" 4<&- 5>&- &\nexec 5>&-\nsleep 0.3\nexit 0\n")
	defer p.Close()
	awaitLoggerExit(t, p)
	time.Sleep(50 * time.Millisecond)
	_, w, _ := p.RuntimeFiles()
	writeWithin(t, w, 1<<20, 10*time.Second, "stdout")
	p.ReleaseRuntimeFiles()
	awaitLogged(t, p, out, 1<<20)
}

// Once a logger that exited after its ready signal has no process left in
// its group, the shim reads its pipes: the process writes on without
// blocking on a pipe nobody reads.
func TestLoggerGroupEmptyingDrainsThePipes(t *testing.T) {
	p := openWithLogger(t, "sleep 0.5 3<&- 4<&- 5>&- &\nexec 5>&-\nsleep 0.2\nexit 0\n")
	defer p.Close()
	_, w, ew := p.RuntimeFiles()
	writeWithin(t, w, 256<<10, 5*time.Second, "stdout")
	writeWithin(t, ew, 256<<10, 5*time.Second, "stderr")
	p.ReleaseRuntimeFiles()
}
