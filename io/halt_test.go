package io

import (
	"os"
	"testing"
	"time"
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
