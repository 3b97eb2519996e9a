package io

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	stdio "io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"
)

func mkfifo(t *testing.T, name string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := unix.Mkfifo(p, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// Everything the process writes reaches the client's FIFO, byte for byte,
// and the client sees EOF once the process's end is closed.
func TestOutputRelayDeliversEveryByte(t *testing.T) {
	outPath, errPath := mkfifo(t, "out"), mkfifo(t, "err")
	// The client opens its readers first, as ctr and CRI do.
	outR, err := os.OpenFile(outPath, os.O_RDONLY|unix.O_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	errR, err := os.OpenFile(errPath, os.O_RDONLY|unix.O_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	p, err := Open(Config{Stdout: outPath, Stderr: errPath}, Env{})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	_, w, ew := p.RuntimeFiles()
	payload := make([]byte, 8<<20+123)
	rand.Read(payload)
	go func() {
		w.Write(payload)
		ew.Write([]byte("err\n"))
		p.ReleaseRuntimeFiles() // the "process" exits
	}()
	var got, gotErr bytes.Buffer
	done := make(chan struct{})
	go func() { stdio.Copy(&gotErr, errR); close(done) }()
	if _, err := stdio.Copy(&got, outR); err != nil {
		t.Fatal(err)
	}
	<-done
	if !p.Drain(5 * time.Second) {
		t.Fatal("relays did not finish")
	}
	if got.Len() != len(payload) || sha256.Sum256(got.Bytes()) != sha256.Sum256(payload) {
		t.Fatalf("stdout: %d bytes, want %d (or checksum differs)", got.Len(), len(payload))
	}
	if gotErr.String() != "err\n" {
		t.Fatalf("stderr %q", gotErr.String())
	}
}

// Only CloseStdin ends the process's input: a client that closes its writer
// and re-attaches a new one gets both writes through.
func TestStdinSurvivesReattachUntilCloseStdin(t *testing.T) {
	inPath := mkfifo(t, "in")
	p, err := Open(Config{Stdin: inPath}, Env{})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	procIn, _, _ := p.RuntimeFiles()
	for _, chunk := range []string{"first ", "second"} {
		w, err := os.OpenFile(inPath, os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		w.Write([]byte(chunk))
		w.Close() // detach
	}
	result := make(chan string, 1)
	go func() { b, _ := stdio.ReadAll(procIn); result <- string(b) }()
	select {
	case got := <-result:
		t.Fatalf("process saw EOF before CloseStdin (read %q)", got)
	case <-time.After(300 * time.Millisecond):
	}
	p.CloseStdin()
	p.CloseStdin() // idempotent
	select {
	case got := <-result:
		if got != "first second" {
			t.Fatalf("stdin %q", got)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no EOF after CloseStdin")
	}
}

func TestFileURIAppendsBothStreams(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "log")
	p, err := Open(Config{Stdout: "file://" + path, Stderr: "file://" + path}, Env{})
	if err != nil {
		t.Fatal(err)
	}
	_, w, ew := p.RuntimeFiles()
	w.Write([]byte("out\n"))
	ew.Write([]byte("err\n"))
	p.ReleaseRuntimeFiles()
	if !p.Drain(5 * time.Second) {
		t.Fatal("relays did not finish")
	}
	p.Close()
	data, _ := os.ReadFile(path)
	if len(data) != 8 || !bytes.Contains(data, []byte("out\n")) || !bytes.Contains(data, []byte("err\n")) {
		t.Fatalf("file holds %q", data)
	}
}

func TestBadStdioIsInvalidArgument(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "missing", "fifo")
	loop := filepath.Join(dir, "loop")
	if err := os.Symlink(loop, loop); err != nil {
		t.Fatal(err)
	}
	long := "/" + strings.Repeat("x", 300) // over NAME_MAX
	for _, cfg := range []Config{
		{Stdout: "relative/path", Stderr: "relative/path"},
		{Stdout: missing, Stderr: missing},
		{Stdin: missing},
		// A directory, a name the kernel refuses (too long, a NUL byte, a
		// symlink loop): the client's mistake too, not the shim's failure.
		{Stdout: dir, Stderr: dir},
		{Stdin: dir},
		{Stdout: long, Stderr: long},
		{Stdin: long},
		{Stdout: dir + "/a\x00b", Stderr: dir + "/a\x00b"},
		{Stdin: dir + "/a\x00b"},
		{Stdout: loop, Stderr: loop},
		{Stdin: loop},
	} {
		if _, err := Open(cfg, Env{}); !errdefs.IsInvalidArgument(err) {
			t.Errorf("Open(%+v) = %v, want InvalidArgument", cfg, err)
		}
	}
	if _, err := os.Stat(filepath.Dir(missing)); err == nil {
		t.Error("a missing stdio path was created")
	}
	if _, err := Open(Config{Stdout: "tcp://x", Stderr: "tcp://x"}, Env{}); !errdefs.IsNotImplemented(err) {
		t.Errorf("unknown scheme: want NotImplemented")
	}
}

// Many small writes racing a reader: an EAGAIN from splice must never be
// blamed on the wrong side (which once parked the relay forever when the
// FIFO refilled between the splice and the check).
func TestStdinRelayUnderRacingWrites(t *testing.T) {
	for round := 0; round < 20; round++ {
		inPath := mkfifo(t, fmt.Sprintf("in%d", round))
		p, err := Open(Config{Stdin: inPath}, Env{})
		if err != nil {
			t.Fatal(err)
		}
		procIn, _, _ := p.RuntimeFiles()
		const total = 2 << 20
		go func() {
			w, err := os.OpenFile(inPath, os.O_WRONLY, 0)
			if err != nil {
				return
			}
			chunk := bytes.Repeat([]byte("y"), 3000)
			for sent := 0; sent < total; sent += len(chunk) {
				w.Write(chunk[:min(len(chunk), total-sent)])
			}
			w.Close()
			p.CloseStdin()
		}()
		got := make(chan int64, 1)
		go func() {
			var n int64
			buf := make([]byte, 4096)
			for {
				m, err := procIn.Read(buf)
				n += int64(m)
				if err != nil {
					got <- n
					return
				}
			}
		}()
		select {
		case n := <-got:
			if n != total {
				t.Fatalf("round %d: %d of %d bytes", round, n, total)
			}
		case <-time.After(20 * time.Second):
			t.Fatalf("round %d: stdin relay stalled", round)
		}
		p.Close()
	}
}

// A bulk stream leaves the pipes at the kernel's default size: resizing a
// pipe while output flows lost pages of it on Linux 6.1 (see relay.go).
func TestBulkStreamKeepsPipeSize(t *testing.T) {
	path := mkfifo(t, "out")
	r, err := os.OpenFile(path, os.O_RDONLY|unix.O_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	before, err := unix.FcntlInt(r.Fd(), unix.F_GETPIPE_SZ, 0)
	if err != nil {
		t.Fatal(err)
	}
	p, err := Open(Config{Stdout: path}, Env{})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	_, w, _ := p.RuntimeFiles()
	go func() {
		w.Write(make([]byte, 8<<20))
		p.ReleaseRuntimeFiles()
	}()
	n, err := stdio.Copy(stdio.Discard, r)
	if err != nil || n != 8<<20 {
		t.Fatalf("read %d bytes (%v), want %d", n, err, 8<<20)
	}
	if after, _ := unix.FcntlInt(r.Fd(), unix.F_GETPIPE_SZ, 0); after != before {
		t.Errorf("client FIFO resized from %d to %d bytes", before, after)
	}
}

// Delivered is false while anything still holds the process's output open
// (a background child outliving it), true once every relay has ended, and
// true for closed pipes: what an upgrade checks before it leaves behind
// stdio it cannot hand over.
func TestDeliveredOnceTheRelaysEnd(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log")
	p, err := Open(Config{Stdout: "file://" + path, Stderr: "file://" + path}, Env{})
	if err != nil {
		t.Fatal(err)
	}
	_, w, _ := p.RuntimeFiles()
	child, err := w.SyscallConn() // a descriptor that outlives the runtime's copies
	if err != nil {
		t.Fatal(err)
	}
	var keep int
	if err := child.Control(func(fd uintptr) { keep, err = unix.Dup(int(fd)) }); err != nil || keep < 0 {
		t.Fatalf("dup: %v", err)
	}
	p.ReleaseRuntimeFiles()
	time.Sleep(50 * time.Millisecond)
	if p.Delivered() {
		t.Fatal("Delivered while a writer still holds stdout")
	}
	unix.Close(keep)
	if !p.Drain(5 * time.Second) {
		t.Fatal("relays did not finish")
	}
	if !p.Delivered() {
		t.Fatal("not Delivered after the relays ended")
	}
	p.Close()
	if !p.Delivered() {
		t.Fatal("closed pipes are not Delivered")
	}
}

// IoUid and IoGid own the pipe ends the process gets, as with the stock
// shim: a process running as that user can reopen its /dev/stdout.
func TestRuntimeFilesOwnedByIoUidGid(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("chown to another user needs root")
	}
	dir := t.TempDir()
	inPath := filepath.Join(dir, "in")
	if err := unix.Mkfifo(inPath, 0o600); err != nil {
		t.Fatal(err)
	}
	p, err := Open(Config{Stdin: inPath, Stdout: "file://" + filepath.Join(dir, "out"), Stderr: "file://" + filepath.Join(dir, "err"),
		UID: 100000, GID: 100001}, Env{})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	in, out, errf := p.RuntimeFiles()
	for name, f := range map[string]*os.File{"stdin": in, "stdout": out, "stderr": errf} {
		var st unix.Stat_t
		if err := unix.Fstat(int(f.Fd()), &st); err != nil {
			t.Fatal(err)
		}
		if st.Uid != 100000 || st.Gid != 100001 {
			t.Errorf("%s owned by %d:%d, want 100000:100001", name, st.Uid, st.Gid)
		}
	}
}

// A process that closes its stdin and runs on: the client's writes to the
// stdin FIFO fail (EPIPE) once the shim found the process's end gone,
// instead of filling the FIFO and blocking.
func TestStdinClosedByTheProcessFailsTheClientsWrites(t *testing.T) {
	inPath := mkfifo(t, "in")
	p, err := Open(Config{Stdin: inPath}, Env{})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	in, _, _ := p.RuntimeFiles()
	in.Close() // the process's fd 0, closed
	p.ReleaseRuntimeFiles()
	client, err := os.OpenFile(inPath, os.O_WRONLY|unix.O_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, err := client.Write([]byte("x"))
		if errors.Is(err, unix.EPIPE) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the client's writes still go into the FIFO after 5 s (last: %v)", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A relay between files that are not pipes (a plain file behind a path)
// copies through the pooled buffer: an *os.File's WriteTo and ReadFrom would
// each bring a 32 KiB buffer of their own per relay.
func TestPlainFileRelayUsesThePooledBuffer(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	if err := os.WriteFile(src, bytes.Repeat([]byte("p"), 256<<10), 0o600); err != nil {
		t.Fatal(err)
	}
	run := func() uint64 {
		in, err := os.Open(src)
		if err != nil {
			t.Fatal(err)
		}
		defer in.Close()
		out, err := os.Create(filepath.Join(dir, "dst"))
		if err != nil {
			t.Fatal(err)
		}
		defer out.Close()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		if n, err := relay(out, in, nil, nil); err != nil || n != 256<<10 {
			t.Fatalf("relayed %d bytes: %v", n, err)
		}
		runtime.ReadMemStats(&after)
		return after.TotalAlloc - before.TotalAlloc
	}
	// The pool keeps a buffer per scheduler P: a run that moved to another P
	// takes a new one. Without the fix every run allocates its own.
	least := run()
	for i := 0; i < 10; i++ {
		least = min(least, run())
	}
	if least >= copyBufSize {
		t.Errorf("every plain-file relay allocated at least %d bytes: a buffer of its own", least)
	}
}
