package io

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"
)

func TestParseFileURI(t *testing.T) {
	o, err := ParseFileURI("file:///var/log/c.log?format=cri&max-size=10MiB&max-files=3")
	if err != nil || !o.CRI || o.MaxSize != 10<<20 || o.MaxFiles != 3 || o.Path != "/var/log/c.log" {
		t.Fatalf("%+v %v", o, err)
	}
	o, err = ParseFileURI("file:///x/raw.log")
	if err != nil || o.CRI || o.MaxSize != 0 {
		t.Fatalf("%+v %v", o, err)
	}
	for uri, want := range map[string]int64{"file:///x?rate=1MiB": 1 << 20, "file:///x?rate=512KiB/s": 512 << 10, "file:///x?rate=2048": 2048} {
		if o, err := ParseFileURI(uri); err != nil || o.Rate != want {
			t.Errorf("%s: rate %d (%v), want %d", uri, o.Rate, err, want)
		}
	}
	for _, bad := range []string{"file://relative", "file:///x?format=json", "file:///x?max-size=-1", "file:///x?max-size=1KiB",
		"file:///x?max-files=0", "file:///x?colour=blue", "file:///x?max-size=lots", "file:///x?rate=10", "file:///x?rate=fast",
		"file:///x?rate=-1MiB"} {
		if _, err := ParseFileURI(bad); !errdefs.IsInvalidArgument(err) {
			t.Errorf("%s: %v, want InvalidArgument", bad, err)
		}
	}
}

var criRecord = regexp.MustCompile(`^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)) (stdout|stderr) (F|P) (.*)$`)

type record struct{ stream, tag, content string }

func readRecords(t *testing.T, paths ...string) []record {
	t.Helper()
	var out []record
	for _, p := range paths {
		f, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 64<<10), 64<<10)
		sc.Split(recordLines)
		for sc.Scan() {
			m := criRecord.FindStringSubmatch(sc.Text())
			if m == nil {
				t.Fatalf("%s: not a CRI record: %q", p, sc.Text())
			}
			if _, err := time.Parse(time.RFC3339Nano, m[1]); err != nil {
				t.Fatalf("bad timestamp %q", m[1])
			}
			out = append(out, record{m[4], m[5], m[6]})
		}
		f.Close()
	}
	return out
}

// recordLines splits a CRI log at each "\n" only, as kubelet reads it: a \r
// before it is content (bufio.ScanLines would drop it).
func recordLines(data []byte, atEOF bool) (int, []byte, error) {
	if i := bytes.IndexByte(data, '\n'); i >= 0 {
		return i + 1, data[:i], nil
	}
	if atEOF && len(data) > 0 {
		return len(data), data, nil
	}
	return 0, nil, nil
}

// The CRI writer produces exactly the lines kubelet parses, splitting long
// lines with the partial tag.
func TestCRIFormat(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.log")
	p, err := Open(Config{Stdout: "file://" + path + "?format=cri", Stderr: "file://" + path + "?format=cri"}, Env{})
	if err != nil {
		t.Fatal(err)
	}
	_, out, errw := p.RuntimeFiles()
	long := strings.Repeat("x", MaxCRILine+10)
	fmt.Fprintf(out, "hello\n%s\n\nno newline at end", long)
	errw.Write([]byte("oops\n"))
	p.ReleaseRuntimeFiles()
	if !p.Drain(5 * time.Second) {
		t.Fatal("not drained")
	}
	p.Close()
	recs := readRecords(t, path)
	var stdout []record
	var stderr []record
	for _, r := range recs {
		if r.stream == "stdout" {
			stdout = append(stdout, r)
		} else {
			stderr = append(stderr, r)
		}
	}
	want := []record{
		{"stdout", "F", "hello"},
		{"stdout", "P", long[:MaxCRILine]},
		{"stdout", "F", long[MaxCRILine:]},
		{"stdout", "F", ""},
		{"stdout", "P", "no newline at end"}, // as containerd's CRI logger tags it
	}
	if fmt.Sprint(stdout) != fmt.Sprint(want) {
		t.Fatalf("stdout records\n got %.200v\nwant %.200v", stdout, want)
	}
	if len(stderr) != 1 || stderr[0] != (record{"stderr", "F", "oops"}) {
		t.Fatalf("stderr records %v", stderr)
	}
}

// Rotation keeps whole records: read back across the rotated files, every
// line is there once, in order.
func TestRotationNeverLosesOrDuplicatesALine(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "c.log")
	const maxSize, files = 64 << 10, 50
	p, err := Open(Config{Stdout: fmt.Sprintf("file://%s?format=cri&max-size=%d&max-files=%d", path, maxSize, files)}, Env{})
	if err != nil {
		t.Fatal(err)
	}
	_, out, _ := p.RuntimeFiles()
	const lines = 20000 // ~1 MiB of records: many rotations, none dropped
	go func() {
		w := bufio.NewWriter(out)
		for i := 0; i < lines; i++ {
			fmt.Fprintf(w, "line %06d\n", i)
		}
		w.Flush()
		p.ReleaseRuntimeFiles()
	}()
	if !p.Drain(10 * time.Second) {
		t.Fatal("not drained")
	}
	p.Close()
	var paths []string
	for i := files - 1; i >= 1; i-- {
		if st, err := os.Stat(fmt.Sprintf("%s.%d", path, i)); err == nil {
			if st.Size() > maxSize {
				t.Fatalf("%s.%d is %d bytes, over max-size", path, i, st.Size())
			}
			paths = append(paths, fmt.Sprintf("%s.%d", path, i))
		}
	}
	if len(paths) < 5 {
		t.Fatalf("only %d rotated files", len(paths))
	}
	paths = append(paths, path)
	recs := readRecords(t, paths...)
	if len(recs) != lines {
		t.Fatalf("%d records, want %d", len(recs), lines)
	}
	for i, r := range recs {
		if r.content != fmt.Sprintf("line %06d", i) || r.tag != "F" {
			t.Fatalf("record %d = %+v", i, r)
		}
	}
}

// With fewer files than the data needs, the oldest files go, whole.
func TestRotationDropsOldestFiles(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.log")
	p, err := Open(Config{Stdout: "file://" + path + "?format=cri&max-size=32KiB&max-files=2"}, Env{})
	if err != nil {
		t.Fatal(err)
	}
	_, out, _ := p.RuntimeFiles()
	go func() {
		for i := 0; i < 10000; i++ {
			fmt.Fprintf(out, "line %06d\n", i)
		}
		p.ReleaseRuntimeFiles()
	}()
	p.Drain(10 * time.Second)
	p.Close()
	if _, err := os.Stat(path + ".2"); err == nil {
		t.Fatal("max-files=2 kept a third file")
	}
	recs := readRecords(t, path+".1", path)
	last := recs[len(recs)-1].content
	if last != "line 009999" {
		t.Fatalf("last record %q", last)
	}
	for i := 1; i < len(recs); i++ { // consecutive: no hole inside what is kept
		var a, b int
		fmt.Sscanf(recs[i-1].content, "line %d", &a)
		fmt.Sscanf(recs[i].content, "line %d", &b)
		if b != a+1 {
			t.Fatalf("gap between %q and %q", recs[i-1].content, recs[i].content)
		}
	}
}

func spawnPlain(t *testing.T) func(*exec.Cmd, func(int)) error {
	return func(cmd *exec.Cmd, exited func(int)) error {
		if err := cmd.Start(); err != nil {
			return err
		}
		go func() { cmd.Wait(); exited(cmd.ProcessState.ExitCode()) }()
		t.Cleanup(func() { cmd.Process.Kill() })
		return nil
	}
}

func writeScript(t *testing.T, body string) string {
	p := filepath.Join(t.TempDir(), "logger")
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"+body), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

// The binary:// protocol: fds 3/4 carry stdout/stderr, fd 5 closes on
// ready, CONTAINER_ID/CONTAINER_NAMESPACE are set, query keys become args.
func TestBinaryLogger(t *testing.T) {
	out := filepath.Join(t.TempDir(), "got")
	env := Env{ProcessID: "c1", Namespace: "ns1", Spawn: spawnPlain(t)}
	t.Setenv("EX_SHIM_SECRET", "leaked") // the logger's environment must not inherit the shim's
	uri := "binary://" + writeScript(t, `exec 5>&-
echo "args=$1 $2 $3 $4 id=$CONTAINER_ID ns=$CONTAINER_NAMESPACE secret=$EX_SHIM_SECRET" > `+out+`.env
cat <&3 > `+out+`.stdout & cat <&4 > `+out+`.stderr; wait
`) + "?b=2&a=1"
	p, err := Open(Config{Stdout: uri, Stderr: uri}, env)
	if err != nil {
		t.Fatal(err)
	}
	_, w, ew := p.RuntimeFiles()
	w.Write([]byte("to stdout\n"))
	ew.Write([]byte("to stderr\n"))
	p.ReleaseRuntimeFiles()
	if !p.Drain(5 * time.Second) {
		t.Fatal("logger did not finish after its inputs closed")
	}
	p.Close()
	for suffix, want := range map[string]string{".stdout": "to stdout\n", ".stderr": "to stderr\n",
		".env": "args=a 1 b 2 id=c1 ns=ns1 secret=\n"} {
		got, _ := os.ReadFile(out + suffix)
		if string(got) != want {
			t.Errorf("%s: %q, want %q", suffix, got, want)
		}
	}
}

// binary-v2:// (containerd 2.2+) is binary:// whose logger proves it is
// ready with a byte on fd 5 before closing it: one that does gets the
// output, with or without a terminal; one that closes fd 5 without it did
// not call ready (it failed) and fails Open, as under the stock shim.
func TestBinaryV2Logger(t *testing.T) {
	out := filepath.Join(t.TempDir(), "out")
	env := Env{ProcessID: "c", Namespace: "n", Spawn: spawnPlain(t)}
	uri := "binary-v2://" + writeScript(t, "cat <&3 >"+out+" 4<&- 5>&- &\ncat <&4 >/dev/null 3<&- 5>&- &\nprintf '\\0' >&5\nexec 5>&-\nwait\n")
	p, err := Open(Config{Stdout: uri, Stderr: uri}, env)
	if err != nil {
		t.Fatalf("binary-v2 logger: %v", err)
	}
	_, w, _ := p.RuntimeFiles()
	w.Write([]byte("hello\n"))
	p.ReleaseRuntimeFiles()
	if !p.Drain(5 * time.Second) {
		t.Error("not drained")
	}
	p.Close()
	if b, _ := os.ReadFile(out); string(b) != "hello\n" {
		t.Errorf("logger got %q", b)
	}
	tp, err := Open(Config{Terminal: true, Stdout: uri}, env)
	if err != nil {
		t.Fatalf("binary-v2 logger behind a terminal: %v", err)
	}
	tp.Close()
	silent := "binary-v2://" + writeScript(t, "exec 5>&-\ncat <&3 >/dev/null 4<&-\n")
	if p, err := Open(Config{Stdout: silent, Stderr: silent}, env); !errdefs.IsFailedPrecondition(err) {
		if err == nil {
			p.Close()
		}
		t.Errorf("a binary-v2 logger closing fd 5 without a byte: %v, want FailedPrecondition", err)
	}
}

func TestBinaryLoggerNeverReadyFailsInBoundedTime(t *testing.T) {
	uri := "binary://" + writeScript(t, "sleep 30\n") // keeps fd 5 open
	start := time.Now()
	_, err := Open(Config{Stdout: uri, Stderr: uri}, Env{ProcessID: "c", Namespace: "n", Spawn: spawnPlain(t), LoggerReadyTimeout: 500 * time.Millisecond})
	if err == nil || !strings.Contains(err.Error(), "did not signal ready") {
		t.Fatalf("err = %v", err)
	}
	if d := time.Since(start); d > 7*time.Second {
		t.Fatalf("took %s", d)
	}
}

func TestBinaryLoggerFailures(t *testing.T) {
	env := Env{ProcessID: "c", Namespace: "n", Spawn: spawnPlain(t)}
	if _, err := Open(Config{Stdout: "binary:///nonexistent/logger"}, env); !errdefs.IsInvalidArgument(err) {
		t.Errorf("missing logger: %v", err)
	}
	notExec := filepath.Join(t.TempDir(), "logger")
	os.WriteFile(notExec, []byte("#!/bin/sh\n"), 0o644)
	if _, err := Open(Config{Stdout: "binary://" + notExec}, env); !errdefs.IsInvalidArgument(err) ||
		!bytes.Contains([]byte(err.Error()), []byte("not an executable")) {
		t.Errorf("non-executable logger: %v", err)
	}
}

// A logger that dies before it is ready fails Open every time, not only
// when its exit is reported before its end of fd 5 is seen: the container
// must not start with output pipes nobody reads (its first write would kill
// it with SIGPIPE). A logger that closes one of its pipes and goes on is
// accepted, and so is one that exits leaving children that read.
func TestBinaryLoggerDyingBeforeReady(t *testing.T) {
	env := Env{ProcessID: "c", Namespace: "n", Spawn: spawnPlain(t)}
	dies := "binary://" + writeScript(t, "exit 1\n")
	for i := 0; i < 10; i++ {
		p, err := Open(Config{Stdout: dies, Stderr: dies}, env)
		if err == nil {
			p.Close()
			t.Fatalf("attempt %d: a logger that exited at once was taken for ready", i+1)
		}
		if !errdefs.IsFailedPrecondition(err) {
			t.Fatalf("attempt %d: %v, want FailedPrecondition", i+1, err)
		}
	}
	stdoutOnly := "binary://" + writeScript(t, "exec 4<&- 5>&-\ncat <&3 >/dev/null\n")
	p, err := Open(Config{Stdout: stdoutOnly, Stderr: stdoutOnly}, env)
	if err != nil {
		t.Fatalf("a logger reading stdout only: %v", err)
	}
	p.Close()
	// A logger that daemonizes: it exits as it closes fd 5, its children read on.
	daemonizes := "binary://" + writeScript(t, "cat <&3 >/dev/null 5>&- &\ncat <&4 >/dev/null 5>&- &\nexit 0\n")
	for i := 0; i < 3; i++ {
		p, err := Open(Config{Stdout: daemonizes, Stderr: daemonizes}, env)
		if err != nil {
			t.Fatalf("attempt %d: a logger whose children read on: %v", i+1, err)
		}
		p.Close()
	}
}

func TestLogURIWithAHostIsRefused(t *testing.T) {
	for _, uri := range []string{"file://relative/abs/path", "file://example.com/var/log/x"} {
		if _, err := ParseFileURI(uri); !errdefs.IsInvalidArgument(err) {
			t.Errorf("%s: %v", uri, err)
		}
	}
	if _, err := ParseFileURI("file://localhost/var/log/x"); err != nil {
		t.Errorf("localhost refused: %v", err)
	}
	if _, err := loggerCommand("binary://host/bin/true"); !errdefs.IsInvalidArgument(err) {
		t.Errorf("binary:// with a host: %v", err)
	}
}

// rate= paces a log: a container writing faster than the rate is slowed
// down (its bytes all arrive, no sooner than the rate allows), and once the
// process is gone Drain lets the rest out at once.
func TestLogRatePacesWithoutLoss(t *testing.T) {
	const rate = 2 << 20
	for _, format := range []string{"raw", "cri"} {
		t.Run(format, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "c.log")
			p, err := Open(Config{Stdout: fmt.Sprintf("file://%s?format=%s&rate=%d", path, format, rate)}, Env{})
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close()
			_, w, _ := p.RuntimeFiles()
			line := bytes.Repeat([]byte("x"), 1023)
			line = append(line, '\n')
			const lines = 5 << 10 // 5 MiB: a 2 MiB burst, then 3 MiB at 2 MiB/s
			start := time.Now()
			for range lines {
				if _, err := w.Write(line); err != nil {
					t.Fatal(err)
				}
			}
			p.ReleaseRuntimeFiles()
			// The writer is done when the last bytes are in the pipe; at
			// most a pipe's worth (1 MiB after growing) was not yet paced.
			if took := time.Since(start); took < 1200*time.Millisecond {
				t.Errorf("5 MiB written in %v through a %d B/s log: not paced", took, rate)
			}
			if !p.Drain(10 * time.Second) {
				t.Fatal("relay did not finish")
			}
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			got := bytes.Count(data, []byte("\n"))
			if got != lines {
				t.Fatalf("%d lines in the log, want %d", got, lines)
			}
		})
	}
}

func TestLogRateReleasedOnDrain(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.log")
	p, err := Open(Config{Stdout: fmt.Sprintf("file://%s?rate=%d", path, MinLogRate)}, Env{})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	_, w, _ := p.RuntimeFiles()
	payload := bytes.Repeat([]byte("y"), 32<<10) // 32 s at the rate; fits in the pipe
	if _, err := w.Write(payload); err != nil {
		t.Fatal(err)
	}
	p.ReleaseRuntimeFiles() // the process exits
	start := time.Now()
	if !p.Drain(5 * time.Second) {
		t.Fatalf("Drain gave up after %v: the pace held the exited process's output back", time.Since(start))
	}
	if data, _ := os.ReadFile(path); !bytes.Equal(data, payload) {
		t.Fatalf("log holds %d bytes, want %d", len(data), len(payload))
	}
}

// A terminal's file:// log is appended raw: the options that need the
// separate streams (format, rotation, rate) are refused, not ignored.
func TestTerminalFileLogRefusesStreamOptions(t *testing.T) {
	dir := t.TempDir()
	for _, q := range []string{"format=cri", "max-size=1MiB", "rate=1MiB"} {
		uri := "file://" + filepath.Join(dir, "t.log") + "?" + q
		p, err := Open(Config{Stdout: uri, Terminal: true}, Env{})
		if err == nil {
			p.Close()
			t.Errorf("terminal with %s: accepted", q)
		} else if !errdefs.IsInvalidArgument(err) {
			t.Errorf("terminal with %s: %v, want InvalidArgument", q, err)
		}
	}
	p, err := Open(Config{Stdout: "file://" + filepath.Join(dir, "t.log"), Terminal: true}, Env{})
	if err != nil {
		t.Fatalf("terminal with a plain file:// log: %v", err)
	}
	p.Close()
}

// A logger whose exit never arrives (one reaped by the daemon that handed it
// over, just before an upgrade's switch) does not hang Close: it waits out
// the SIGTERM and SIGKILL steps and returns.
func TestCloseReturnsWhenTheLoggerExitNeverComes(t *testing.T) {
	gone := exec.Command("true")
	if err := gone.Run(); err != nil { // started and reaped: nothing will report its exit again
		t.Fatal(err)
	}
	p, err := ImportPipes(PipesState{LoggerPid: gone.Process.Pid, Null: true},
		func(int, string, bool) (*os.File, error) { return nil, fmt.Errorf("no descriptors in this state") },
		Env{Claim: func(int, func(int)) {}}) // its exit is never reported
	if err != nil {
		t.Fatal(err)
	}
	p.loggerStop = 50 * time.Millisecond
	closed := make(chan struct{})
	go func() { p.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("Close still waits for a logger exit that never comes")
	}
}

// A logger gets the stock shim's 12 s after SIGTERM to flush and exit:
// one that needs 7 s is not killed halfway (the shim used to give 5 s).
func TestLoggerGetsTheStockStopBudget(t *testing.T) {
	out := filepath.Join(t.TempDir(), "out")
	env := Env{ProcessID: "c", Namespace: "n", Spawn: spawnPlain(t)}
	uri := "binary://" + writeScript(t, "trap 'sleep 7; echo flushed >"+out+"; exit 0' TERM\n"+
		"cat <&3 >/dev/null 4<&- 5>&- &\ncat <&4 >/dev/null 3<&- 5>&- &\nexec 5>&- 3<&- 4<&-\n"+
		"while :; do sleep 0.05; done\n")
	p, err := Open(Config{Stdout: uri, Stderr: uri}, env)
	if err != nil {
		t.Fatal(err)
	}
	p.ReleaseRuntimeFiles()
	p.Drain(100 * time.Millisecond)
	p.Close()
	if b, _ := os.ReadFile(out); string(b) != "flushed\n" {
		t.Errorf("the logger was killed before it had flushed (got %q)", b)
	}
}

// A file:// log whose files were removed under it (so its rotation's rename
// fails) goes on in a new file; the container's later output is not lost.
func TestLogGoesOnWhenItsFilesAreRemoved(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x")
	uri := "file://" + path + "?format=cri&max-size=32KiB&max-files=2"
	p, err := Open(Config{Stdout: uri, Stderr: uri}, Env{})
	if err != nil {
		t.Fatal(err)
	}
	_, w, _ := p.RuntimeFiles()
	line := strings.Repeat("y", 99) + "\n"
	for range 100 { // 10 KB
		w.Write([]byte(line))
	}
	deadline := time.Now().Add(5 * time.Second)
	for p.moved.Load() < 10000 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	os.Remove(path)
	os.Remove(path + ".1")
	for range 1000 { // 100 KB: rotations
		w.Write([]byte(line))
	}
	w.Write([]byte("LAST\n"))
	p.ReleaseRuntimeFiles()
	if !p.Drain(5 * time.Second) {
		t.Fatal("relays did not finish")
	}
	p.Close()
	var all []byte
	for _, f := range []string{path + ".1", path} {
		data, _ := os.ReadFile(f)
		all = append(all, data...)
	}
	if !bytes.Contains(all, []byte(" stdout F LAST\n")) {
		t.Fatalf("the last line is not in the log (%d bytes across %s and .1; dropped %d)", len(all), path, p.Dropped())
	}
}

// A terminal whose output goes to a binary:// logger, closed before the
// console came (the runtime failed): the shim keeps no end of the logger's
// stdout pipe, so the logger sees end of file.
func TestTerminalLoggerClosedBeforeTheConsole(t *testing.T) {
	out := filepath.Join(t.TempDir(), "got")
	// A child of the logger reads its stdout: Close's SIGTERM ends the
	// logger, not the child, which finishes only at end of file. The
	// logger is ready (fd 5 closed by both) once the child runs.
	uri := "binary://" + writeScript(t, `(exec 5>&-; cat <&3 > `+out+`.partial; mv `+out+`.partial `+out+`) &
exec 5>&-
wait`)
	p, err := Open(Config{Terminal: true, Stdout: uri}, Env{ProcessID: "c", Namespace: "n", Spawn: spawnPlain(t)})
	if err != nil {
		t.Fatal(err)
	}
	closed := make(chan struct{})
	go func() { p.Close(); close(closed) }() // waits out the logger's SIGTERM step
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, err := os.Stat(out); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the logger never saw end of file on its stdout")
		}
		time.Sleep(10 * time.Millisecond)
	}
	<-closed
}

// A binary:// logger behind a terminal that reads late (a backend pushing
// back for longer than the stall timeout) gets every byte: the stall policy
// is a client FIFO's, and without a terminal the process itself would wait
// on the logger's pipe.
func TestTerminalLoggerReadingLateLosesNothing(t *testing.T) {
	out := filepath.Join(t.TempDir(), "got")
	uri := "binary://" + writeScript(t, `exec 5>&-
sleep 1
cat <&3 > `+out+`
`)
	p, err := Open(Config{Terminal: true, Stdout: uri},
		Env{ProcessID: "c", Namespace: "n", Spawn: spawnPlain(t), StallTimeout: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	master, slave := openPty(t)
	if err := p.AttachConsole(master); err != nil {
		t.Fatal(err)
	}
	// More than the logger's pipe and the pty hold together, written
	// before the logger reads anything.
	want := bytes.Repeat([]byte("0123456789abcdef"), 16<<10)
	if _, err := slave.Write(want); err != nil {
		t.Fatal(err)
	}
	slave.Close()
	p.Hangup()
	if !p.Drain(10 * time.Second) {
		t.Fatal("output not drained")
	}
	p.Close()
	var got []byte
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if got, _ = os.ReadFile(out); len(got) >= len(want) {
			break // the logger's cat may finish after Close
		}
	}
	if !bytes.Equal(got, want) || p.Dropped() != 0 {
		t.Errorf("the logger got %d of %d bytes; %d dropped", len(got), len(want), p.Dropped())
	}
}

// A relay paced by rate= that owes more than a halt's timeout is halted all
// the same: the halt wakes it from the pace's wait, the chunk in hand goes
// out early, and it stops before the next (an in-place upgrade would
// otherwise fail for as long as the container writes faster than its rate).
// Started again, it delivers the rest: nothing is lost.
func TestPacedLogRelayHalts(t *testing.T) {
	for _, format := range []string{"raw", "cri"} {
		t.Run(format, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "c.log")
			p, err := Open(Config{Stdout: fmt.Sprintf("file://%s?format=%s&rate=%d", path, format, MinLogRate)}, Env{})
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close()
			_, out, _ := p.RuntimeFiles()
			w, err := dupFile(out) // the process's end, once the runtime's copies are released
			if err != nil {
				t.Fatal(err)
			}
			p.ReleaseRuntimeFiles()
			line := append(bytes.Repeat([]byte("z"), 511), '\n')
			const lines = 20 // 10 KiB: one second's burst, then 9 s of debt
			// One write(2): an empty pipe takes it whole before the relay
			// can read, so its first read takes it all (were it to read part
			// of it, it would sleep off that part's debt with the rest
			// still in the pipe).
			if _, err := w.Write(bytes.Repeat(line, lines)); err != nil {
				t.Fatal(err)
			}
			waitPipeEmpty(t, w) // the relay has read it all, and is paced now
			if err := p.Halt(2 * time.Second); err != nil {
				t.Fatalf("halt of a paced relay: %v", err)
			}
			p.Restart()
			w.Close() // the process exits: the pace lets the rest out
			if !p.Drain(5 * time.Second) {
				t.Fatal("relay did not finish")
			}
			data, _ := os.ReadFile(path)
			if got := bytes.Count(data, []byte("\n")); got != lines {
				t.Fatalf("%d lines in the log, want %d", got, lines)
			}
		})
	}
}

// waitPipeEmpty waits until the pipe behind w holds nothing: its reader
// has taken every byte.
func waitPipeEmpty(t *testing.T, w *os.File) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		n, err := unix.IoctlGetInt(int(w.Fd()), unix.TIOCINQ)
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the pipe still holds %d bytes", n)
		}
	}
}

// A file:// log that is not a regular file (a device such as /dev/null) is
// written as it is, but never rotated: rotation renames the file and makes a
// new one, which would replace the device node with a plain file. max-size on
// it is refused.
func TestLogRotationOfADeviceRefused(t *testing.T) {
	null := filepath.Join(t.TempDir(), "null")
	if err := unix.Mknod(null, unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))); err != nil {
		t.Skipf("cannot make a device node: %v", err)
	}
	_, err := Open(Config{Stdout: "file://" + null + "?max-size=32KiB"}, Env{})
	if !errdefs.IsInvalidArgument(err) {
		t.Fatalf("max-size on a device: %v, want InvalidArgument", err)
	}
	p, err := Open(Config{Stdout: "file://" + null}, Env{})
	if err != nil {
		t.Fatalf("a device as a plain log: %v", err)
	}
	_, w, _ := p.RuntimeFiles()
	w.Write(bytes.Repeat([]byte("x"), 64<<10))
	p.ReleaseRuntimeFiles()
	if !p.Drain(5 * time.Second) {
		t.Fatal("relay did not finish")
	}
	p.Close()
	if st, err := os.Stat(null); err != nil || st.Mode().Type() != os.ModeDevice|os.ModeCharDevice {
		t.Fatalf("the device node after the log: %v %v", st.Mode(), err)
	}
}

// A CRI log relay that starts with a carry (a predecessor's partial line)
// and is halted before its first read hands that carry on whole: the halt
// check between records must count what the reader has not yet taken.
func TestCRIRelayHaltedBeforeItsFirstReadKeepsItsCarry(t *testing.T) {
	rf, err := openRotating(FileOptions{Path: filepath.Join(t.TempDir(), "c.log"), CRI: true})
	if err != nil {
		t.Fatal(err)
	}
	defer rf.Close()
	src, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	defer w.Close()
	const partial = "half a line the predecessor had read"
	h := newHalter([]byte(partial))
	h.state.Store(haltRequested) // asked for before the relay runs
	var moved, dropped atomic.Uint64
	if err := rf.relayCRI(src, "stdout", &moved, &dropped, h); !errors.Is(err, errHalted) {
		t.Fatalf("relay returned %v, want errHalted", err)
	}
	if string(h.carry) != partial {
		t.Fatalf("the carry handed on is %q, want %q", h.carry, partial)
	}
}
