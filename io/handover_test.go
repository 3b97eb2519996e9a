package io

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
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

// keepDups is the handover's descriptor keeper as far as io is concerned:
// bare duplicates, owned by whoever adopts them (no os.File of its own
// whose finalizer could close them).
type keepDups struct{}

func (keepDups) KeepDup(f *os.File) (int, error) { return dupFD(f) }

func (keepDups) KeepRaw(fd int, _ string) (int, error) {
	return unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
}

// lateReader is a client that opens its output FIFO at once and reads it
// once start is closed, until end of file or limit bytes (limit > 0).
func lateReader(path string, limit int) (start chan struct{}, got chan []byte) {
	start, got = make(chan struct{}), make(chan []byte, 1)
	go func() {
		f, err := os.OpenFile(path, os.O_RDONLY, 0)
		if err != nil {
			got <- nil
			return
		}
		defer f.Close()
		<-start
		var b bytes.Buffer
		buf := make([]byte, 32<<10)
		for limit <= 0 || b.Len() < limit {
			n, err := f.Read(buf)
			b.Write(buf[:n])
			if err != nil {
				break
			}
		}
		got <- b.Bytes()
	}()
	return start, got
}

func adoptFD(fd int, name string, pollable bool) (*os.File, error) {
	if err := unix.SetNonblock(fd, pollable); err != nil {
		return nil, err
	}
	return os.NewFile(uintptr(fd), name), nil
}

// An upgrade's view of a process's stdio: a 4 MiB stream is halted in the
// middle (its writer blocked on full pipes), handed over (descriptor numbers, carry, counters) and continued by
// a new Pipes, which in the real upgrade lives in the next binary; stdin
// written before and after arrives too, in order. The client sees every byte
// once, and end of file when the process closes its output.
func TestStdioHandedOverMidStream(t *testing.T) {
	for _, mode := range []string{"handover", "restart"} {
		t.Run(mode, func(t *testing.T) {
			outPath, inPath := mkfifo(t, "out"), mkfifo(t, "in")
			p, err := Open(Config{Stdout: outPath, Stdin: inPath}, Env{})
			if err != nil {
				t.Fatal(err)
			}
			clientIn, err := os.OpenFile(inPath, os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer clientIn.Close()
			rin, rout, _ := p.RuntimeFiles()
			procIn, _ := dupFile(rin)
			procOut, _ := dupFile(rout)
			p.ReleaseRuntimeFiles()
			if err := p.Halt(time.Second); !errdefs.IsFailedPrecondition(err) {
				t.Fatalf("halt before the client's reader is there: %v, want FailedPrecondition", err)
			}
			// The client reads stdout only after the handover: the writer is
			// blocked on full pipes then, so the halt is mid-stream.
			startReading, got := lateReader(outPath, 0)
			for i := 0; ; i++ { // until the client's reader opened the FIFO
				if err := p.Halt(time.Second); err == nil {
					p.Restart()
					break
				} else if i > 200 {
					t.Fatal(err)
				}
				time.Sleep(5 * time.Millisecond)
			}

			payload := make([]byte, 4<<20)
			rand.Read(payload)
			wrote := make(chan error, 1)
			go func() {
				for off := 0; off < len(payload); off += 7001 {
					if _, err := procOut.Write(payload[off:min(off+7001, len(payload))]); err != nil {
						wrote <- err
						return
					}
				}
				wrote <- nil
			}()
			clientIn.Write([]byte("before;"))
			time.Sleep(20 * time.Millisecond) // the writer fills both pipes
			if err := p.Halt(2 * time.Second); err != nil {
				buf := make([]byte, 1<<20)
				t.Fatalf("%v\n%s", err, buf[:runtime.Stack(buf, true)])
			}
			clientIn.Write([]byte("during;")) // waits in the FIFO
			next := p
			if mode == "handover" {
				st, err := p.Export(keepDups{})
				if err != nil {
					t.Fatal(err)
				}
				if len(st.Outputs) != 1 || st.Stdin == nil {
					t.Fatalf("state %+v", st)
				}
				if next, err = ImportPipes(*st, adoptFD, Env{}); err != nil {
					t.Fatal(err)
				}
				// The predecessor's files go away, as they do at execve.
				p.Close()
			} else {
				p.Restart()
			}
			clientIn.Write([]byte("after;"))
			close(startReading)
			if err := <-wrote; err != nil {
				t.Fatal(err)
			}
			procOut.Close()
			var b []byte
			select {
			case b = <-got:
			case <-time.After(10 * time.Second):
				t.Fatalf("client saw no end of file (delivered %d of %d)", next.Moved(), len(payload))
			}
			if len(b) != len(payload) || sha256.Sum256(b) != sha256.Sum256(payload) {
				t.Fatalf("client got %d bytes, want %d (or checksum differs)", len(b), len(payload))
			}
			if next.Moved() != uint64(len(payload)) {
				t.Errorf("counted %d bytes delivered, want %d", next.Moved(), len(payload))
			}
			want := []byte("before;during;after;")
			in := make([]byte, 0, len(want))
			buf := make([]byte, 64)
			_ = procIn.SetReadDeadline(time.Now().Add(5 * time.Second))
			for len(in) < len(want) {
				n, err := procIn.Read(buf)
				if err != nil {
					t.Fatalf("stdin: %q then %v", in, err)
				}
				in = append(in, buf[:n]...)
			}
			if !bytes.Equal(in, want) {
				t.Fatalf("stdin %q, want %q", in, want)
			}
			if !next.Drain(5 * time.Second) {
				t.Fatal("relays did not finish")
			}
			next.Close()
			procIn.Close()
		})
	}
}

// What cannot be handed over yet is refused with a typed error before
// anything stops: a process not started (its output to a plain file, which
// goes over once it runs); null stdio halts at once.
func TestHandableRefusals(t *testing.T) {
	dir := t.TempDir()
	plain := dir + "/plain"
	if err := os.WriteFile(plain, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	p, err := Open(Config{Stdout: plain}, Env{})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if err := p.Handable(); !errdefs.IsFailedPrecondition(err) {
		t.Fatalf("not started: %v", err)
	}
	p.ReleaseRuntimeFiles()
	if err := p.Handable(); err != nil {
		t.Fatalf("plain file, started: %v, want it handable", err)
	}
	n, err := Open(Config{}, Env{})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	if err := n.Halt(time.Second); err != nil {
		t.Fatalf("null stdio: %v", err)
	}
}

// A CRI-format file:// log shared by stdout and stderr, with rotation, handed over with a
// line half written: the line is logged once, whole, by the successor, and rotation goes on
// from the size the log had (the next rotation comes when the handed-over size says so).
func TestFileLogHandedOver(t *testing.T) {
	dir := t.TempDir()
	logPath := dir + "/c.log"
	uri := "file://" + logPath + "?format=cri&max-size=32KiB&max-files=3"
	p, err := Open(Config{Stdout: uri, Stderr: uri}, Env{})
	if err != nil {
		t.Fatal(err)
	}
	procOut, procErr := launchedProcess(t, p)
	if err := p.Handable(); err != nil {
		t.Fatal(err)
	}
	procOut.Write([]byte("first line\n"))
	procErr.Write([]byte("an error\n"))
	procOut.Write([]byte("half a li"))
	time.Sleep(50 * time.Millisecond)
	if err := p.Halt(2 * time.Second); err != nil {
		t.Fatal(err)
	}
	st, err := p.Export(keepDups{})
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Logs) != 1 || len(st.Outputs) != 2 || st.Outputs[0].Log != 0 || st.Outputs[1].Log != 0 {
		t.Fatalf("state %+v, want one log shared by two outputs", st)
	}
	next, err := ImportPipes(*st, adoptFD, Env{})
	if err != nil {
		t.Fatal(err)
	}
	p.Close()
	procOut.Write([]byte("ne\n"))
	// Enough after the handover to rotate once: 32 KiB limit.
	for i := 0; i < 600; i++ {
		procOut.Write([]byte("filler line to make the log rotate after the handover\n"))
	}
	procOut.Close()
	procErr.Close()
	if !next.Drain(5 * time.Second) {
		t.Fatal("relays did not finish")
	}
	next.Close()
	rotated, err := os.ReadFile(logPath + ".1")
	if err != nil {
		t.Fatalf("no rotation after the handover: %v", err)
	}
	live, _ := os.ReadFile(logPath)
	all := string(rotated) + string(live)
	for _, want := range []string{" stdout F first line\n", " stderr F an error\n", " stdout F half a line\n"} {
		if c := strings.Count(all, want); c != 1 {
			t.Errorf("record %q appears %d times in the logs, want once", want, c)
		}
	}
	if strings.Contains(all, " P half a li") || strings.Contains(all, " F ne\n") {
		t.Errorf("the line written across the handover was split:\n%s", all)
	}
	if n := strings.Count(all, "filler line"); n != 600 {
		t.Errorf("%d filler records, want 600", n)
	}
}

// A binary:// logger keeps running across a handover: the new Pipes takes over waiting
// for it (Env.Claim), output written after the handover still reaches it, and closing the
// new Pipes stops it.
func TestBinaryLoggerHandedOver(t *testing.T) {
	out := filepath.Join(t.TempDir(), "logged")
	uri := "binary://" + writeScript(t, `exec 5>&-
cat <&3 > `+out+`.stdout & cat <&4 > `+out+`.stderr; wait
`)
	p, err := Open(Config{Stdout: uri, Stderr: uri}, Env{ProcessID: "c", Namespace: "n", Spawn: spawnPlain(t)})
	if err != nil {
		t.Fatal(err)
	}
	procOut, procErr := launchedProcess(t, p)
	procOut.Write([]byte("before\n"))
	if err := p.Halt(time.Second); err != nil {
		t.Fatal(err)
	}
	st, err := p.Export(keepDups{})
	if err != nil {
		t.Fatal(err)
	}
	if st.LoggerPid != p.logger.Pid {
		t.Fatalf("state names logger %d, want %d", st.LoggerPid, p.logger.Pid)
	}
	// The successor's reaper would deliver the exit; here, the logger's disappearance.
	claim := func(pid int, exited func(int)) {
		go func() {
			for unix.Kill(pid, 0) == nil {
				time.Sleep(10 * time.Millisecond)
			}
			exited(0)
		}()
	}
	next, err := ImportPipes(*st, adoptFD, Env{Claim: claim})
	if err != nil {
		t.Fatal(err)
	}
	procOut.Write([]byte("after\n"))
	procErr.Write([]byte("err after\n"))
	procOut.Close()
	procErr.Close()
	if !next.Drain(5 * time.Second) {
		t.Fatal("the logger did not finish after the process's output ended")
	}
	next.Close()
	if b, _ := os.ReadFile(out + ".stdout"); string(b) != "before\nafter\n" {
		t.Errorf("logger's stdout %q", b)
	}
	if b, _ := os.ReadFile(out + ".stderr"); string(b) != "err after\n" {
		t.Errorf("logger's stderr %q", b)
	}
}

// The stall policy's state goes over: a relay discarding for a reader that stopped reading
// is handed over discarding (the process is not held back for another stall timeout), with
// its count of dropped bytes, and delivers again once the reader reads.
func TestDiscardingRelayHandedOver(t *testing.T) {
	const stallTimeout = time.Second
	p, reader, proc := discardingOutput(t, stallTimeout)
	chunk := bytes.Repeat([]byte("x"), 64<<10)
	if err := p.Halt(2 * time.Second); err != nil {
		t.Fatalf("halt while discarding: %v", err)
	}
	st, err := p.Export(keepDups{})
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Outputs) != 1 || !st.Outputs[0].Discarding || st.Dropped == 0 {
		t.Fatalf("state %+v, want one output handed over discarding, with its dropped count", st)
	}
	next, err := ImportPipes(*st, adoptFD, Env{})
	if err != nil {
		t.Fatal(err)
	}
	p.Close()
	defer next.Close()
	// Still discarding: the process is not held back.
	done := make(chan struct{})
	go func() {
		for i := 0; i < 8; i++ {
			proc.Write(chunk)
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(stallTimeout / 2): // a relay not discarding would hold it a whole stall timeout
		t.Fatal("the process was held back after the handover: not discarding")
	}
	if next.Dropped() <= st.Dropped {
		t.Errorf("dropped %d after the handover, want more than %d", next.Dropped(), st.Dropped)
	}
	// The reader reads again: output flows.
	buf := make([]byte, 1<<20)
	deadline := time.Now().Add(5 * time.Second)
	got := 0
	for time.Now().Before(deadline) {
		n, _ := reader.Read(buf)
		got += n
		proc.Write([]byte("fresh\n"))
		if bytes.Contains(buf[:max(n, 0)], []byte("fresh\n")) {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("no fresh output reached the reader after it read again (read %d bytes)", got)
}

// A relay that takes over a discarding stream (after a halt undone, or in the
// next binary) while its client emptied the FIFO during the halt: the reader
// is back, and fresh output reaches it, though the FIFO's fill measured at
// the start is already 0.
func TestDiscardingRelayReaderCaughtUpDuringHalt(t *testing.T) {
	for _, handOver := range []bool{false, true} {
		t.Run(fmt.Sprintf("handover=%v", handOver), func(t *testing.T) {
			p, reader, proc := discardingOutput(t, 300*time.Millisecond)
			if err := p.Halt(2 * time.Second); err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 1<<20)
			for readNow(t, reader, buf) > 0 { // the client reads everything while the shim is halted
			}
			next := p
			if handOver {
				st, err := p.Export(keepDups{})
				if err != nil {
					t.Fatal(err)
				}
				if next, err = ImportPipes(*st, adoptFD, Env{}); err != nil {
					t.Fatal(err)
				}
				p.Close()
			} else {
				p.Restart()
			}
			defer next.Close()
			for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); {
				proc.Write([]byte("fresh\n"))
				time.Sleep(20 * time.Millisecond)
				if n := readNow(t, reader, buf); bytes.Contains(buf[:n], []byte("fresh\n")) {
					return
				}
			}
			t.Fatalf("the client reads all the time, and no fresh output came in 3 s (%d bytes dropped)", next.Dropped())
		})
	}
}

// readNow reads what f holds, without waiting (0: nothing).
func readNow(t *testing.T, f *os.File, buf []byte) int {
	rc, err := f.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	rc.Control(func(fd uintptr) { n, _ = unix.Read(int(fd), buf) })
	return max(n, 0)
}

// discardingOutput is a stdout relay whose client (reader) is there and
// does not read, fed by the process's end (proc) until the stall policy
// discards.
func discardingOutput(t *testing.T, stallTimeout time.Duration) (p *Pipes, reader, proc *os.File) {
	t.Helper()
	path := mkfifo(t, "out")
	p, err := Open(Config{Stdout: path}, Env{StallTimeout: stallTimeout})
	if err != nil {
		t.Fatal(err)
	}
	if reader, err = os.OpenFile(path, os.O_RDONLY|unix.O_NONBLOCK, 0); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { reader.Close() })
	_, w, _ := p.RuntimeFiles()
	proc, _ = dupFile(w)
	p.ReleaseRuntimeFiles()
	t.Cleanup(func() { proc.Close() })
	for chunk := bytes.Repeat([]byte("x"), 64<<10); p.Dropped() == 0; { // fill both pipes, wait out the stall
		proc.Write(chunk)
	}
	return p, reader, proc
}

// A stdin relay halted while the process is not reading holds a chunk it
// could not write (the process's pipe full): handed over (or started again
// after a failed upgrade), that chunk goes first, and the process reads
// every byte once, in order.
func TestStdinChunkInHandAtAHaltIsCarried(t *testing.T) {
	for _, mode := range []string{"handover", "restart"} {
		t.Run(mode, func(t *testing.T) {
			inPath := mkfifo(t, "in")
			p, err := Open(Config{Stdin: inPath}, Env{})
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close()
			client, err := os.OpenFile(inPath, os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			procIn := processStdin(t, p)
			defer procIn.Close()
			payload := make([]byte, 300<<10)
			for i := range payload {
				payload[i] = byte(i*7 + i/251)
			}
			written := make(chan struct{})
			go func() {
				// Small writes, apart: each read of the relay's takes less
				// than its buffer, so it copies (a full buffer would send it
				// to splice(2), which holds no bytes in hand).
				for off := 0; off < len(payload); off += 512 {
					client.Write(payload[off:min(off+512, len(payload))])
					time.Sleep(time.Millisecond)
				}
				client.Close()
				close(written)
			}()
			waitFIFOFull(t, procIn) // the process reads nothing: the relay waits to write
			if err := p.Halt(2 * time.Second); err != nil {
				t.Fatal(err)
			}
			next := p
			if mode == "handover" {
				st, err := p.Export(keepDups{})
				if err != nil {
					t.Fatal(err)
				}
				if st.Stdin == nil || len(st.Stdin.Carry) == 0 {
					t.Fatal("the halted stdin relay handed over no chunk: the test did not halt it in a write")
				}
				if next, err = ImportPipes(*st, adoptFD, Env{}); err != nil {
					t.Fatal(err)
				}
				defer next.Close()
			} else {
				p.Restart()
			}
			_ = procIn.SetReadDeadline(time.Now().Add(10 * time.Second))
			var got bytes.Buffer
			if _, err := stdio.CopyN(&got, procIn, int64(len(payload))); err != nil {
				t.Fatalf("the process read %d of %d bytes: %v", got.Len(), len(payload), err)
			}
			<-written
			if !bytes.Equal(got.Bytes(), payload) {
				t.Fatal("the process read the bytes out of order, or changed")
			}
		})
	}
}
