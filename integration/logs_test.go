package integration

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/pkg/cio"

	"github.com/example/containerd-shim-example-v2/integration/harness"
)

// seqOutput is what `seq 1 n` prints.
func seqOutput(n int) string {
	var b strings.Builder
	for i := 1; i <= n; i++ {
		b.WriteString(strconv.Itoa(i))
		b.WriteByte('\n')
	}
	return b.String()
}

// writeScript writes an executable shell script.
func writeScript(t *testing.T, path, body string) {
	t.Helper()
	if err := os.WriteFile(path, []byte("#!/bin/sh\n"+body), 0o755); err != nil {
		t.Fatal(err)
	}
}

// loggerScript is a binary:// logging driver: it records its arguments (one a line) and
// the two variables the shim passes, copies fd 3 (stdout) and fd 4 (stderr) to files
// (without handing fd 5 to the copiers), signals ready by closing fd 5, and exits when both
// streams reached EOF. Its environment has no PATH (the shim passes only CONTAINER_ID and
// CONTAINER_NAMESPACE), hence absolute paths.
func loggerScript(dir string) string {
	return fmt.Sprintf(`out=%[1]q
printf '%%s\n' "$@" > "$out/args"
printf 'CONTAINER_ID=%%s\nCONTAINER_NAMESPACE=%%s\nPATH=%%s\n' "$CONTAINER_ID" "$CONTAINER_NAMESPACE" "${PATH-unset}" > "$out/env"
/bin/cat <&3 > "$out/stdout" 5>&- &
/bin/cat <&4 > "$out/stderr" 5>&- &
exec 3<&- 4<&- 5>&-
wait
echo done > "$out/finished"
`, dir)
}

// Log URI 1: `ctr run --log-uri binary:///logger?k=v` hands the container's output to the
// logger in full (1.3 MB of stdout and a stderr line), all of it written before ctr (which
// deletes the task) returns; the logger's arguments are the query's keys and values in
// sorted key order, its environment carries CONTAINER_ID and CONTAINER_NAMESPACE.
func TestLogBinaryLogger(t *testing.T) {
	forEachFlavor(t, func(t *testing.T, d *harness.Daemon) {
		ctx, ns := d.NewNamespace(t)
		ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
		defer cancel()
		const id = "lg1"
		dir := t.TempDir()
		logger := filepath.Join(dir, "logger")
		writeScript(t, logger, loggerScript(dir))

		const n = 200000 // seq 1 200000: 1,288,895 bytes
		uri := "binary://" + logger + "?zeta=26&alpha=1&mid=&beta=two+words"
		_, stderr, code, err := d.Ctr(ctx, ctrRun(d, "--rm", "--log-uri", uri, harness.ImageName, id,
			"sh", "-c", fmt.Sprintf("seq 1 %d; echo to-stderr >&2; exit 2", n))...)
		if err != nil {
			t.Fatalf("ctr run: %v (stderr %q)", err, stderr)
		}
		if code != 2 {
			t.Errorf("ctr run exit code %d, want 2 (stderr %q)", code, stderr)
		}
		got, _ := os.ReadFile(filepath.Join(dir, "stdout"))
		if want := seqOutput(n); string(got) != want {
			t.Errorf("logger got %d bytes of stdout when ctr returned, want %d (first difference at %d)", len(got), len(want), firstDiff(string(got), want))
		}
		if got, _ := os.ReadFile(filepath.Join(dir, "stderr")); string(got) != "to-stderr\n" {
			t.Errorf("logger stderr %q, want %q", got, "to-stderr\n")
		}
		args, _ := os.ReadFile(filepath.Join(dir, "args"))
		if want := "alpha\n1\nbeta\ntwo words\nmid\n\nzeta\n26\n"; string(args) != want {
			t.Errorf("logger args (one a line) %q, want %q (keys sorted, each followed by its value)", args, want)
		}
		env, _ := os.ReadFile(filepath.Join(dir, "env"))
		for _, want := range []string{"CONTAINER_ID=" + id + "\n", "CONTAINER_NAMESPACE=" + ns + "\n"} {
			if !strings.Contains(string(env), want) {
				t.Errorf("logger environment %q lacks %q", env, want)
			}
		}
		if _, err := os.Stat(filepath.Join(dir, "finished")); err != nil {
			t.Errorf("logger had not finished (EOF on both streams) when ctr returned: %v", err)
		}
		expectNoLeftovers(t, d, ns, id)
		expectNoProcess(t, logger)
	})
}

// Log URI 2: `ctr run --log-uri file:///c.log` appends both streams' bytes unchanged.
func TestLogFileRaw(t *testing.T) {
	forEachFlavor(t, func(t *testing.T, d *harness.Daemon) {
		ctx, ns := d.NewNamespace(t)
		ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		const id = "lf1"
		path := filepath.Join(t.TempDir(), "sub", "c.log")
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte("before\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		_, stderr, code, err := d.Ctr(ctx, ctrRun(d, "--rm", "--log-uri", "file://"+path, harness.ImageName, id,
			"sh", "-c", "seq 1 1000; echo to-stderr >&2; exit 0")...)
		if err != nil || code != 0 {
			t.Fatalf("ctr run: code %d err %v stderr %q", code, err, stderr)
		}
		got, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		s, ok := strings.CutPrefix(string(got), "before\n")
		if !ok {
			t.Fatalf("log file %q does not start with its earlier content: not appended", firstBytes(got, 100))
		}
		// The streams are copied independently, so the stderr line (one write) may land
		// anywhere between stdout's chunks; without it, stdout must be intact.
		want := seqOutput(1000)
		i := strings.Index(s, "to-stderr\n")
		if i < 0 {
			t.Fatalf("log file lacks the stderr line; it holds %d bytes after the earlier content", len(s))
		}
		if rest := s[:i] + s[i+len("to-stderr\n"):]; rest != want {
			t.Errorf("log file's stdout part is %d bytes, want %d (first difference at %d)", len(rest), len(want), firstDiff(rest, want))
		}
		expectNoLeftovers(t, d, ns, id)
	})
}

// criRecord is one line of the CRI log format: <RFC3339Nano> <stream> <F|P> <content>.
var criRecord = regexp.MustCompile(`^(\S+) (stdout|stderr) ([FP]) (.*)$`)

// Log URI 3 (the shim's extension): file:///c.log?format=cri&max-size=64KiB&max-files=5
// writes kubelet's CRI log format: every line is one record, a line longer than 16 KiB is
// split into P records and a final F record that reassemble to it, and the file is rotated
// before it would exceed max-size (c.log.1 newest ... c.log.4 oldest), so that reading
// c.log.N..c.log.1, c.log gives every line once, in order (the 200 KiB written fit into the
// 5 files: nothing had to be dropped).
func TestLogFileCRIFormatRotation(t *testing.T) {
	forEachFlavor(t, func(t *testing.T, d *harness.Daemon) {
		ctx, ns := d.NewNamespace(t)
		ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
		defer cancel()
		const id = "lc1"
		const maxSize, maxFiles, lines, longLen = 64 << 10, 5, 400, 40000
		path := filepath.Join(t.TempDir(), "c.log")
		u, err := url.Parse(fmt.Sprintf("file://%s?format=cri&max-size=64KiB&max-files=%d", path, maxFiles))
		if err != nil {
			t.Fatal(err)
		}
		// A 40000-byte line, 400 numbered lines of 400 bytes, one stderr line.
		script := fmt.Sprintf(`head -c %d /dev/zero | tr '\0' L; echo
i=1; while [ $i -le %d ]; do printf '%%06d %%0393d\n' $i 0; i=$((i+1)); done
echo to-stderr >&2`, longLen, lines)
		ctr := newContainer(t, ctx, d, id, []string{"sh", "-c", script})
		task, statusC := startTask(t, ctx, ctr, cio.LogURI(u))
		if code := exitCode(t, ctx, statusC); code != 0 {
			t.Fatalf("exit code %d", code)
		}
		if _, err := task.Delete(ctx); err != nil {
			t.Fatalf("delete: %v", err)
		}

		wantOut := []string{strings.Repeat("L", longLen)}
		for i := 1; i <= lines; i++ {
			wantOut = append(wantOut, fmt.Sprintf("%06d %s", i, strings.Repeat("0", 393)))
		}

		// Files oldest first: c.log.<maxFiles-1> ... c.log.1, c.log.
		var files []string
		for i := maxFiles; i >= 1; i-- {
			p := fmt.Sprintf("%s.%d", path, i)
			if _, err := os.Stat(p); err == nil {
				if i >= maxFiles {
					t.Errorf("%s exists: more than max-files=%d files kept", p, maxFiles)
				}
				files = append(files, p)
			}
		}
		files = append(files, path)
		if len(files) < 3 {
			t.Errorf("only %d log files for ~220 KiB with max-size 64 KiB: rotation did not happen as expected (%v)", len(files), files)
		}

		streams := map[string][]string{}
		partial := map[string]string{}
		var pRecords int
		for _, f := range files {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			if len(data) > maxSize {
				t.Errorf("%s is %d bytes, more than max-size %d", f, len(data), maxSize)
			}
			if len(data) > 0 && data[len(data)-1] != '\n' {
				t.Errorf("%s does not end with a whole record", f)
			}
			for n, line := range strings.Split(strings.TrimSuffix(string(data), "\n"), "\n") {
				m := criRecord.FindStringSubmatch(line)
				if m == nil {
					t.Fatalf("%s line %d is not a CRI record: %q", f, n+1, firstBytes([]byte(line), 120))
				}
				if _, err := time.Parse(time.RFC3339Nano, m[1]); err != nil {
					t.Errorf("%s line %d: timestamp %q: %v", f, n+1, m[1], err)
				}
				stream, tag, content := m[2], m[3], m[4]
				if len(content) > 16<<10 {
					t.Errorf("%s line %d: record content of %d bytes, more than 16 KiB", f, n+1, len(content))
				}
				partial[stream] += content
				if tag == "P" {
					pRecords++
					continue
				}
				streams[stream] = append(streams[stream], partial[stream])
				partial[stream] = ""
			}
		}
		if pRecords < 2 {
			t.Errorf("%d P records, want at least 2 for a %d-byte line (16 KiB per record)", pRecords, longLen)
		}
		for s, rest := range partial {
			if rest != "" {
				t.Errorf("%s: P records without a final F record (%d bytes)", s, len(rest))
			}
		}
		got := streams["stdout"]
		if len(got) != len(wantOut) {
			t.Errorf("stdout: %d lines reassembled from %v, want %d", len(got), files, len(wantOut))
		}
		for i := 0; i < len(got) && i < len(wantOut); i++ {
			if got[i] != wantOut[i] {
				t.Errorf("stdout line %d: %q..., want %q... (lines lost, duplicated or reordered)", i, firstBytes([]byte(got[i]), 20), firstBytes([]byte(wantOut[i]), 20))
				break
			}
		}
		if e := streams["stderr"]; len(e) != 1 || e[0] != "to-stderr" {
			t.Errorf("stderr records %q, want one record %q", e, "to-stderr")
		}
		expectNoLeftovers(t, d, ns, id)
	})
}

// Log URI 4: a logger that never signals ready (keeps fd 5 open) makes task creation fail
// with an error naming the problem ("did not signal ready") within the shim's bound of 10 s,
// and nothing of the task or the logger is left. The flavors run in parallel (each waits).
func TestLogBinaryLoggerNeverReady(t *testing.T) {
	for _, flavor := range harness.AllFlavors {
		t.Run("containerd-"+flavor, func(t *testing.T) {
			t.Parallel()
			d := daemonFor(t, flavor)
			ctx, ns := d.NewNamespace(t)
			ctx, cancel := context.WithTimeout(ctx, 40*time.Second)
			defer cancel()
			const id = "lnr"
			logger := filepath.Join(t.TempDir(), "never-ready-logger")
			writeScript(t, logger, "while :; do /bin/sleep 1; done\n")

			start := time.Now()
			_, stderr, code, err := d.Ctr(ctx, ctrRun(d, "--rm", "--log-uri", "binary://"+logger, harness.ImageName, id, "true")...)
			took := time.Since(start)
			if err != nil {
				t.Fatalf("ctr run did not come back within %v: %v (stderr %q)", 40*time.Second, err, stderr)
			}
			if code == 0 {
				t.Fatalf("ctr run succeeded with a logger that never signals ready")
			}
			if !strings.Contains(stderr, "did not signal ready") {
				t.Errorf("ctr run stderr %q does not say the logger did not signal ready", stderr)
			}
			if took > 20*time.Second {
				t.Errorf("task creation failed after %v, want within 20 s", took)
			}
			removeContainerIfAny(t, ctx, d, id)
			expectNoLeftovers(t, d, ns, id)
			expectNoProcess(t, logger)
		})
	}
}

// Log URI 5: a logger path that does not exist fails task creation at once, naming it.
func TestLogBinaryLoggerMissing(t *testing.T) {
	forEachFlavor(t, func(t *testing.T, d *harness.Daemon) {
		ctx, ns := d.NewNamespace(t)
		ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		const id = "lmiss"
		logger := filepath.Join(t.TempDir(), "no-such-logger")
		start := time.Now()
		_, stderr, code, err := d.Ctr(ctx, ctrRun(d, "--rm", "--log-uri", "binary://"+logger, harness.ImageName, id, "true")...)
		took := time.Since(start)
		if err != nil {
			t.Fatalf("ctr run: %v (stderr %q)", err, stderr)
		}
		if code == 0 {
			t.Fatalf("ctr run succeeded with a missing logger")
		}
		// Our shim: "logger <path> is not an executable file"; stock: "fork/exec <path>: no
		// such file or directory".
		if !strings.Contains(stderr, logger) || !strings.Contains(stderr, "no such file") && !strings.Contains(stderr, "not an executable") {
			t.Errorf("ctr run stderr %q does not name the missing logger %s and say what is wrong with it", stderr, logger)
		}
		if took > 5*time.Second {
			t.Errorf("task creation failed after %v, want at once (< 5 s)", took)
		}
		removeContainerIfAny(t, ctx, d, id)
		expectNoLeftovers(t, d, ns, id)
	})
}

// removeContainerIfAny deletes the container record (and task) ctr may have left after a
// failed run.
func removeContainerIfAny(t *testing.T, ctx context.Context, d *harness.Daemon, id string) {
	t.Helper()
	ctr, err := d.Client().LoadContainer(ctx, id)
	if err != nil {
		return
	}
	if err := harness.DeleteContainer(ctx, ctr); err != nil {
		t.Errorf("delete %s after the failed run: %v", id, err)
	}
}

// expectNoProcess fails the test if a process whose command line mentions marker is still
// alive a few seconds later.
func expectNoProcess(t *testing.T, marker string) {
	t.Helper()
	match := func(args []string) bool { return strings.Contains(strings.Join(args, " "), marker) }
	deadline := time.Now().Add(5 * time.Second)
	for {
		procs := harness.Processes(match)
		if len(procs) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("processes of %s left: %v", marker, procs)
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func firstDiff(a, b string) int {
	n := min(len(a), len(b))
	for i := 0; i < n; i++ {
		if a[i] != b[i] {
			return i
		}
	}
	return n
}

func firstBytes(b []byte, n int) string {
	if len(b) > n {
		return string(b[:n]) + "..."
	}
	return string(bytes.ToValidUTF8(b, nil))
}

// Log URI 4 (the shim's extension): file:///c.log?format=cri&rate=2MiB paces the log. A
// container printing about 5 MiB of records is slowed to the rate (ctr run takes over a
// second, where an unpaced run takes a fraction of one) and every line arrives.
func TestLogFileRate(t *testing.T) {
	forEachFlavor(t, func(t *testing.T, d *harness.Daemon) {
		ctx, ns := d.NewNamespace(t)
		ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
		defer cancel()
		const id, lines = "lr1", 49152
		const text = "abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyz0123456789a" // 63 bytes
		path := filepath.Join(t.TempDir(), "c.log")
		start := time.Now()
		_, stderr, code, err := d.Ctr(ctx, ctrRun(d, "--rm", "--log-uri", "file://"+path+"?format=cri&rate=2MiB", harness.ImageName, id,
			"sh", "-c", fmt.Sprintf("yes %s | head -n %d", text, lines))...)
		took := time.Since(start)
		if err != nil || code != 0 {
			t.Fatalf("ctr run: code %d err %v stderr %q", code, err, stderr)
		}
		f, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		n := 0
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			m := criRecord.FindStringSubmatch(sc.Text())
			if m == nil || m[2] != "stdout" || m[3] != "F" || m[4] != text {
				t.Fatalf("record %d is %q, want a full stdout record of %q", n+1, sc.Text(), text)
			}
			n++
		}
		if n != lines {
			t.Errorf("%d records, want %d", n, lines)
		}
		if took < time.Second {
			t.Errorf("ctr run took %v for about 5 MiB of records at 2 MiB/s: not paced", took.Round(time.Millisecond))
		}
		t.Logf("ctr run took %v", took.Round(time.Millisecond))
		expectNoLeftovers(t, d, ns, id)
	})
}
