package io

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// recordsIn returns the lines of every file of the log (path, path.1, ...).
func recordsIn(t *testing.T, path string) map[string]bool {
	t.Helper()
	found := map[string]bool{}
	files, _ := filepath.Glob(path + "*")
	for _, name := range files {
		b, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		s := bufio.NewScanner(bytes.NewReader(b))
		s.Buffer(nil, 1<<20)
		for s.Scan() {
			found[s.Text()] = true
		}
	}
	return found
}

// twoWriters opens a capped log twice, as a task and its exec given one URI
// do; both are closed when the test ends.
func twoWriters(t *testing.T, o FileOptions) (a, b *rotatingFile) {
	t.Helper()
	for _, r := range []**rotatingFile{&a, &b} {
		f, err := openRotating(o)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		*r = f
	}
	return a, b
}

// A task (A) and its exec (B) share one capped log, max-files=2. A rotates
// the file, and B's file is path.1 now. B's next records go to the file the
// path names: written on into path.1 (its own file was not full), they went
// with it at A's next rotation, and B wrote on into a removed file. README:
// "none loses the other's records or files".
func TestSiblingRotationDoesNotRemoveTheOthersNewRecords(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.log")
	a, b := twoWriters(t, FileOptions{Path: path, MaxSize: 2048, MaxFiles: 2})
	write := func(r *rotatingFile, rec string) {
		if _, err := r.writeRecord([]byte(rec)); err != nil {
			t.Fatal(err)
		}
	}
	big := func(tag string) string { return tag + " " + strings.Repeat("a", 1000-len(tag)-2) + "\n" }
	write(a, big("a1")) // 1000 bytes
	write(a, big("a2")) // 2000 bytes: full for A's next record
	write(a, big("a3")) // rotates: path.1 = a1 a2, path = a3
	write(b, "b1\n")    // B's file is path.1, 2000 bytes: 3 more fit
	write(b, "b2\n")
	write(a, big("a4")) // path = a3 a4
	write(a, big("a5")) // rotates: path.1 (with b1, b2) removed
	write(b, "b3\n")    // B: still room in its (removed) file
	got := recordsIn(t, path)
	for _, rec := range []string{"a4", "a5", "b1", "b2", "b3"} {
		ok := false
		for line := range got {
			if strings.HasPrefix(line, rec+" ") || line == rec {
				ok = true
			}
		}
		if !ok {
			t.Errorf("record %s, written after the last rotation but one, is in no file of the log", rec)
		}
	}
}

// Two writers of one capped log (a task and its exec), each with its own
// rotatingFile, write at once. Unordered, both found room for a record and
// both appended (files over max-size), and rotations overlapped: both
// shifted the <path>.N chain, a rename onto <path>.2 replacing the file the
// other had just moved there, and one removed the .next file the other had
// just made (a quarter of the records lost). max-files keeps every file
// here, so every record must be in one of them. README: "the cap holds for
// all, and none loses the other's records or files".
func TestConcurrentWritersKeepTheCapAndEveryRecord(t *testing.T) {
	const writers, records, max = 2, 2000, 2048
	path := filepath.Join(t.TempDir(), "c.log")
	o := FileOptions{Path: path, MaxSize: max, MaxFiles: 250}
	var wg sync.WaitGroup
	for w := range writers {
		r, err := openRotating(o)
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer r.Close()
			for i := range records {
				if _, err := r.writeRecord(fmt.Appendf(nil, "w%d %05d %s\n", w, i, strings.Repeat("x", 80))); err != nil {
					t.Errorf("writer %d: %v", w, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	files, _ := filepath.Glob(path + "*")
	if len(files) >= o.MaxFiles {
		t.Fatalf("%d files: max-files %d has pushed some out, and the count below means nothing", len(files), o.MaxFiles)
	}
	over := 0
	for _, name := range files {
		st, err := os.Stat(name)
		if err != nil {
			t.Fatal(err)
		}
		if st.Size() > max {
			if over < 3 {
				t.Errorf("%s is %d bytes, over max-size %d", filepath.Base(name), st.Size(), max)
			}
			over++
		}
	}
	if over > 0 {
		t.Errorf("%d of %d files over max-size", over, len(files))
	}
	found := map[string]bool{}
	for line := range recordsIn(t, path) {
		if len(line) >= 9 {
			found[line[:9]] = true
		}
	}
	lost := 0
	for w := range writers {
		for i := range records {
			if !found[fmt.Sprintf("w%d %05d ", w, i)] {
				lost++
			}
		}
	}
	if lost > 0 {
		t.Errorf("%d of %d records lost across %d files", lost, writers*records, len(files))
	}
}

// max-files=1 truncates in place. Two writers of the file both find it
// full at once: one truncates and writes its record, and the other, its
// turn come, finds room and writes its own after it. (When the lock covered
// the rotation only, the second truncated again, and the first writer's
// record was gone in most runs.)
func TestTwoWritersTruncatingAtOnceKeepTheNewRecord(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "c.log")
	if err := os.WriteFile(path, bytes.Repeat([]byte("old\n"), 500), 0o640); err != nil { // 2000 bytes
		t.Fatal(err)
	}
	a, b := twoWriters(t, FileOptions{Path: path, MaxSize: 2048, MaxFiles: 1})
	// Hold the log's lock until both writers wait for it, then let them go.
	d, err := os.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Flock(int(d.Fd()), unix.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for _, w := range []struct {
		r   *rotatingFile
		rec string
	}{{a, "a new record " + strings.Repeat("a", 100) + "\n"}, {b, "b new record " + strings.Repeat("b", 100) + "\n"}} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := w.r.writeRecord([]byte(w.rec)); err != nil {
				t.Error(err)
			}
		}()
	}
	time.Sleep(200 * time.Millisecond) // both waiting for the lock
	d.Close()
	wg.Wait()
	b2, _ := os.ReadFile(path)
	t.Logf("file: %d bytes", len(b2))
	for _, rec := range []string{"a new record", "b new record"} {
		if !bytes.Contains(b2, []byte(rec)) {
			t.Errorf("%q, written after the truncation, is gone: the file holds %q", rec, b2)
		}
	}
}

// The same through Open, as the shim runs a task and its exec given one
// CRI log URI (max-size=32KiB, max-files=2): the task writes long lines,
// the exec a short one now and then. The exec's lines written after the
// task's rotation go to c.log.1, and the task's next rotation removes them.
func TestTaskAndExecSharingACappedCRILogLoseNoLine(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.log")
	uri := "file://" + path + "?format=cri&max-size=32KiB&max-files=2"
	task, err := Open(Config{Stdout: uri, Stderr: uri}, Env{})
	if err != nil {
		t.Fatal(err)
	}
	defer task.Close()
	exec, err := Open(Config{Stdout: uri, Stderr: uri}, Env{})
	if err != nil {
		t.Fatal(err)
	}
	defer exec.Close()
	_, tout, _ := task.RuntimeFiles()
	_, eout, _ := exec.RuntimeFiles()
	// say writes a line and waits until it is in some file of the log.
	say := func(out *os.File, line string) {
		t.Helper()
		fmt.Fprintln(out, line)
		deadline := time.Now().Add(5 * time.Second)
		for time.Now().Before(deadline) {
			for got := range recordsIn(t, path) {
				if strings.HasSuffix(got, " "+line) {
					return
				}
			}
			time.Sleep(5 * time.Millisecond)
		}
		t.Fatalf("%.20s... never reached the log", line)
	}
	long := strings.Repeat("t", 10<<10)
	for i := 0; i < 4; i++ { // 4 x ~10 KiB: the 4th rotates
		say(tout, fmt.Sprintf("task%d %s", i, long))
	}
	say(eout, "exec line 1")
	say(eout, "exec line 2")
	for i := 4; i < 8; i++ { // the task's next rotation
		say(tout, fmt.Sprintf("task%d %s", i, long))
	}
	got := recordsIn(t, path)
	for _, want := range []string{"exec line 1", "exec line 2", "task7"} {
		ok := false
		for line := range got {
			if strings.Contains(line, " "+want) {
				ok = true
			}
		}
		if !ok {
			t.Errorf("%q is in no file of the log, though only files older than it may be pushed out", want)
		}
	}
	// And where kubelet reads: the exec's lines were written after task3,
	// which is in c.log, yet they are not in c.log.
	cur, _ := os.ReadFile(path)
	t.Logf("c.log holds exec line 1: %v", bytes.Contains(cur, []byte("exec line 1")))
}

// stdout and stderr of a task and of its exec, four streams, one CRI log
// with max-size: every line is in the log once, whole, and no file is over
// the cap. max-files keeps every file.
func TestTaskAndExecFourStreamsOneCappedCRILog(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.log")
	uri := "file://" + path + "?format=cri&max-size=32KiB&max-files=1000"
	const lines = 2000
	var ps []*Pipes
	var wg sync.WaitGroup
	for n := range 2 {
		p, err := Open(Config{Stdout: uri, Stderr: uri}, Env{})
		if err != nil {
			t.Fatal(err)
		}
		ps = append(ps, p)
		_, out, errf := p.RuntimeFiles()
		for s, f := range []*os.File{out, errf} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range lines {
					fmt.Fprintf(f, "p%d s%d %04d %s\n", n, s, i, strings.Repeat("x", 50+i%300))
				}
			}()
		}
	}
	wg.Wait()
	for _, p := range ps {
		p.ReleaseRuntimeFiles()
		if !p.Drain(20 * time.Second) {
			t.Fatal("not drained")
		}
		p.Close()
	}
	seen := map[string]int{}
	files, _ := filepath.Glob(path + "*")
	for _, name := range files {
		b, _ := os.ReadFile(name)
		if len(b) > 32<<10 {
			t.Errorf("%s: %d bytes, over 32 KiB", filepath.Base(name), len(b))
		}
		for _, l := range strings.Split(strings.TrimSuffix(string(b), "\n"), "\n") {
			f := strings.SplitN(l, " ", 7)
			if len(f) != 7 || f[2] != "F" || len(f[6]) < 50 || strings.Trim(f[6], "x") != "" {
				t.Errorf("a broken record: %.60q", l)
				continue
			}
			seen[f[3]+" "+f[4]+" "+f[5]]++
		}
	}
	lost, twice := 0, 0
	for n := range 2 {
		for s := range 2 {
			for i := range lines {
				switch seen[fmt.Sprintf("p%d s%d %04d", n, s, i)] {
				case 0:
					lost++
				case 1:
				default:
					twice++
				}
			}
		}
	}
	if lost+twice > 0 {
		t.Errorf("%d lines lost, %d written more than once, of %d", lost, twice, 4*lines)
	}
}

// Something else holding an flock on the log's directory (a backup tool)
// delays a rotation by at most rotationLockWait: it does not stop the log,
// and the rotation still happens.
func TestRotationNotStoppedByAForeignLockOnTheDirectory(t *testing.T) {
	dir := t.TempDir()
	held, err := os.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	if err := unix.Flock(int(held.Fd()), unix.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "c.log")
	r, err := openRotating(FileOptions{Path: path, MaxSize: 1024, MaxFiles: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	done := make(chan error, 1)
	go func() {
		rec := []byte(strings.Repeat("x", 99) + "\n")
		for range 11 { // the 11th record rotates
			if _, err := r.writeRecord(rec); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * rotationLockWait):
		t.Fatal("the rotation is still waiting for the directory's lock")
	}
	if size(path) != 100 || size(path+".1") != 1000 {
		t.Errorf("sizes %d and %d after the rotation, want 100 and 1000", size(path), size(path+".1"))
	}
}
