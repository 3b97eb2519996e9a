package io

import (
	"bytes"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// A halt that runs out of time is withdrawn, and the relay goes on by
// itself, unless the relay has just committed to it: then it is about to
// return errHalted, and stopped waits for that and says so, so that the
// caller starts it again instead of leaving a stream nobody relays.
func TestHaltWithdrawnOnlyBeforeTheRelayCommits(t *testing.T) {
	committed := newHalter(nil)
	committed.state.Store(haltRequested)
	if !committed.commit() {
		t.Fatal("a requested halt was not committed")
	}
	go func() {
		time.Sleep(50 * time.Millisecond) // the relay on its way out
		committed.finish(errHalted)
	}()
	if !committed.stopped() {
		t.Error("a relay that committed to the halt was taken as going on")
	}

	withdrawn := newHalter(nil)
	withdrawn.state.Store(haltRequested)
	if withdrawn.stopped() {
		t.Error("a relay that had not acted on the halt was taken as stopped")
	}
	if withdrawn.commit() || withdrawn.requested() {
		t.Error("the relay still sees the withdrawn halt")
	}
}

// A relay never asked to halt (a terminal's input, when the output's halt
// failed first) is going on: stopped says so at once instead of waiting for
// it to end.
func TestStoppedOfARelayNeverAskedToHalt(t *testing.T) {
	h := newHalter(nil)
	res := make(chan bool, 1)
	go func() { res <- h.stopped() }()
	select {
	case stopped := <-res:
		if stopped {
			t.Error("a running relay never asked to halt was taken as stopped")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("stopped waits for a relay never asked to halt")
	}
}

// A relay woken by a halt's deadline whose halt was withdrawn before it
// acted (the deadline set, then cleared, and no halt asked any more) reads
// again: stdin goes on reaching the process, instead of the process reading
// end of file.
func TestStdinRelayWokenByAWithdrawnHaltGoesOn(t *testing.T) {
	inPath := mkfifo(t, "in")
	p, err := Open(Config{Stdin: inPath}, Env{})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	procIn, _, _ := p.RuntimeFiles()
	client, err := os.OpenFile(inPath, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	client.Write([]byte("before;"))
	buf := make([]byte, 64)
	if n, err := procIn.Read(buf); err != nil || string(buf[:n]) != "before;" {
		t.Fatalf("the process read %q, %v", buf[:n], err)
	}
	src := p.relays[0].src // what a halt wakes, as halter.halt does
	_ = src.SetReadDeadline(time.Now())
	time.Sleep(50 * time.Millisecond)
	_ = src.SetReadDeadline(time.Time{})
	client.Write([]byte("after"))
	_ = procIn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := procIn.Read(buf); err != nil || string(buf[:n]) != "after" {
		t.Fatalf("after the wake-up the process read %q, %v: the relay ended", buf[:n], err)
	}
}

// A relay woken in a write (the client's FIFO full) by a halt that was
// withdrawn before it acted writes on: nothing is lost, nothing counted as
// discarded, and the stream goes on. With the stall policy off, the wake-up
// used to end the relay; with it on, it began discarding at once.
func TestOutputRelayWokenInAWriteByAWithdrawnHaltLosesNothing(t *testing.T) {
	for _, stall := range []time.Duration{0, 10 * time.Second} {
		t.Run("stall="+stall.String(), func(t *testing.T) {
			reader, p := fifoWithIdleReader(t, Env{StallTimeout: stall})
			_, w, _ := p.RuntimeFiles()
			payload := bytes.Repeat([]byte("0123456789abcdef"), 16<<10) // 256 KiB: the FIFO fills
			written := make(chan error, 1)
			go func() {
				_, err := w.Write(payload)
				p.ReleaseRuntimeFiles()
				written <- err
			}()
			waitFIFOFull(t, reader)
			dst, _ := p.relays[0].out.ready() // what a halt wakes, as halter.halt does
			wakeAsAWithdrawnHalt(dst.SetWriteDeadline)
			got := readAllNonblocking(t, reader, written)
			if !bytes.Equal(got, payload) || p.Dropped() != 0 {
				t.Fatalf("the reader got %d of %d bytes, %d counted as dropped", len(got), len(payload), p.Dropped())
			}
		})
	}
}

// The same for a terminal's output relay.
func TestTerminalOutputWokenInAWriteByAWithdrawnHaltLosesNothing(t *testing.T) {
	reader, p, slave := terminalIntoFIFO(t, Env{StallTimeout: 10 * time.Second})
	raw, err := unix.IoctlGetTermios(int(slave.Fd()), unix.TCGETS)
	if err != nil {
		t.Fatal(err)
	}
	raw.Oflag &^= unix.OPOST // bytes as written: no \n -> \r\n
	if err := unix.IoctlSetTermios(int(slave.Fd()), unix.TCSETS, raw); err != nil {
		t.Fatal(err)
	}
	payload := bytes.Repeat([]byte("0123456789abcdef"), 16<<10)
	written := make(chan error, 1)
	go func() {
		_, err := slave.Write(payload)
		slave.Close()
		written <- err
	}()
	waitFIFOFull(t, reader)
	dst, _ := p.consoleDst.ready()
	wakeAsAWithdrawnHalt(dst.SetWriteDeadline)
	got := readAllNonblocking(t, reader, written)
	if !bytes.Equal(got, payload) || p.Dropped() != 0 {
		t.Fatalf("the reader got %d of %d bytes, %d counted as dropped", len(got), len(payload), p.Dropped())
	}
}

// A terminal's input relay woken in a write to a full pty by a withdrawn
// halt writes on (copyRawHalting, here between two pipes).
func TestRawCopyWokenInAWriteByAWithdrawnHaltGoesOn(t *testing.T) {
	srcR, srcW := nonblockingPipe(t)
	dstR, dstW := nonblockingPipe(t)
	ended := make(chan error, 1)
	go func() {
		var last byte
		err := copyRawHalting(dstW, srcR, make([]byte, 32<<10), newHalter(nil), &last)
		dstW.Close()
		ended <- err
	}()
	payload := bytes.Repeat([]byte("0123456789abcdef"), 16<<10)
	written := make(chan error, 1)
	go func() {
		_, err := srcW.Write(payload)
		srcW.Close()
		written <- err
	}()
	waitFIFOFull(t, dstR)
	wakeAsAWithdrawnHalt(dstW.SetWriteDeadline)
	got := readAllNonblocking(t, dstR, ended)
	if !bytes.Equal(got, payload) {
		t.Fatalf("the reader got %d of %d bytes: the copy ended at the wake-up", len(got), len(payload))
	}
}

// After such a wake-up the stall policy still holds: the clock the halt's
// end cleared runs again, and a reader that never reads stops holding the
// process back.
func TestStallClockRunsAgainAfterAWithdrawnHalt(t *testing.T) {
	reader, p := fifoWithIdleReader(t, Env{StallTimeout: 300 * time.Millisecond})
	_, w, _ := p.RuntimeFiles()
	waitStarted := make(chan struct{})
	go func() {
		close(waitStarted)
		w.Write(bytes.Repeat([]byte("x"), 256<<10))
	}()
	<-waitStarted
	waitFIFOFull(t, reader)
	dst, _ := p.relays[0].out.ready()
	wakeAsAWithdrawnHalt(dst.SetWriteDeadline)
	writtenWithin(t, 10*time.Second, func() error {
		_, err := w.Write(bytes.Repeat([]byte("y"), 256<<10))
		return err
	}, "the process stayed blocked: the stall clock did not run again after the halt's end cleared it")
	p.ReleaseRuntimeFiles()
	if p.Dropped() == 0 {
		t.Fatal("nothing counted as dropped")
	}
}

// wakeAsAWithdrawnHalt does to a relay waiting in a write what a halt
// that timed out does to one that took the halt's wake-up (the write's
// deadline error) and then sat unscheduled until the halt was withdrawn: it
// finds no halt asked for, and the deadline is not its own. (A relay that
// had not run before the halt's end cleared the deadline is not woken at
// all: Go's poller takes back a wake-up whose deadline was reset.)
func wakeAsAWithdrawnHalt(setWriteDeadline func(time.Time) error) {
	_ = setWriteDeadline(time.Now())
}

// waitFIFOFull waits until the pipe behind r holds most of a pipe's worth
// and takes no more: its writer waits for room. (How full a pipe can get
// depends on the sizes of the writes into its pages.)
func waitFIFOFull(t *testing.T, r *os.File) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	last, same := -1, 0
	for same < 3 {
		n, err := unix.IoctlGetInt(int(r.Fd()), unix.TIOCINQ)
		if err != nil {
			t.Fatal(err)
		}
		if n >= 32<<10 && n == last {
			same++
		} else {
			same = 0
		}
		last = n
		if time.Now().After(deadline) {
			t.Fatalf("the pipe holds %d bytes, not full", n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// readAllNonblocking reads r (non-blocking) until end of file, after done
// said the writer side finished.
func readAllNonblocking(t *testing.T, r *os.File, done <-chan error) []byte {
	t.Helper()
	var got []byte
	buf := make([]byte, 64<<10)
	deadline := time.Now().Add(10 * time.Second)
	finished := false
	for time.Now().Before(deadline) {
		n, err := unix.Read(int(r.Fd()), buf)
		if n > 0 {
			got = append(got, buf[:n]...)
			continue
		}
		if n == 0 && err == nil && finished {
			return got // end of file
		}
		select {
		case <-done:
			finished = true
		default:
		}
		time.Sleep(time.Millisecond)
	}
	t.Fatalf("no end of file within 10 s (read %d bytes)", len(got))
	return nil
}

func nonblockingPipe(t *testing.T) (r, w *os.File) {
	t.Helper()
	var fds [2]int
	if err := unix.Pipe2(fds[:], unix.O_NONBLOCK|unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	r, w = os.NewFile(uintptr(fds[0]), "r"), os.NewFile(uintptr(fds[1]), "w")
	t.Cleanup(func() { r.Close(); w.Close() })
	return r, w
}
