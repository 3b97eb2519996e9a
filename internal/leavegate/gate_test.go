package leavegate

import (
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/containerd/errdefs"
)

func TestAdmitAfterCloseIsRefused(t *testing.T) {
	var g Gate
	held := 0
	admit := func() error { return g.Admit(func() error { held++; return nil }) }
	empty := func() bool { return held == 0 }
	if err := admit(); err != nil {
		t.Fatal(err)
	}
	if g.CloseIfEmpty(empty) {
		t.Fatal("closed while a task is held")
	}
	held = 0
	if !g.CloseIfEmpty(empty) {
		t.Fatal("not closed with nothing held")
	}
	if g.CloseIfEmpty(empty) {
		t.Error("a second close also decided to leave")
	}
	err := admit()
	if !errdefs.IsFailedPrecondition(err) || held != 0 {
		t.Errorf("Admit after the close: %v (held %d), want FailedPrecondition and nothing recorded", err, held)
	}
	// record's own error comes back as it is.
	var h Gate
	want := errors.New("taken")
	if err := h.Admit(func() error { return want }); err != want {
		t.Errorf("Admit returned %v, want record's error", err)
	}
}

// However creates and a close interleave, nothing is admitted after the
// close, and a close never happens while something admitted is held.
func TestNothingAdmittedAfterTheClose(t *testing.T) {
	for range 200 {
		var g Gate
		var mu sync.Mutex // the service's own lock, taken inside the gate's
		held := 0
		closedWith := -1
		var wg sync.WaitGroup
		for range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_ = g.Admit(func() error { mu.Lock(); held++; mu.Unlock(); return nil })
			}()
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !g.CloseIfEmpty(func() bool { mu.Lock(); defer mu.Unlock(); closedWith = held; return held == 0 }) {
				mu.Lock()
				held = 0 // every task deleted
				mu.Unlock()
			}
		}()
		wg.Wait()
		if closedWith != 0 || held != 0 {
			t.Fatalf("closed with %d held; %d admitted after the close", closedWith, held)
		}
	}
}

// A task announced by `start` keeps the gate open until its Create is
// admitted, whatever that Create's outcome, or until the expectation
// expires; once closed, nothing more is expected.
func TestExpectedTaskKeepsTheGateOpen(t *testing.T) {
	var g Gate
	empty := func() bool { return true }
	if err := g.Expect("c2", time.Minute); err != nil {
		t.Fatal(err)
	}
	if g.CloseIfEmpty(empty) {
		t.Fatal("closed while c2's Create was expected")
	}
	// Another task's Create does not count for c2.
	if err := g.AdmitTask("c3", func() error { return nil }); err != nil {
		t.Fatal(err)
	}
	if g.CloseIfEmpty(empty) {
		t.Fatal("closed while c2's Create was still expected")
	}
	// c2's Create arrives and fails: it is not expected any more.
	if err := g.AdmitTask("c2", func() error { return errors.New("bad spec") }); err == nil {
		t.Fatal("record's error lost")
	}
	if !g.CloseIfEmpty(empty) {
		t.Fatal("not closed once the expected Create was admitted")
	}
	if err := g.Expect("c4", time.Minute); !errdefs.IsFailedPrecondition(err) {
		t.Fatalf("Expect after the close: %v, want FailedPrecondition", err)
	}
	if err := g.AdmitTask("c4", func() error { t.Error("recorded after the close"); return nil }); !errdefs.IsFailedPrecondition(err) {
		t.Fatalf("AdmitTask after the close: %v, want FailedPrecondition", err)
	}

	var h Gate
	if err := h.Expect("c5", time.Millisecond); err != nil {
		t.Fatal(err)
	}
	time.Sleep(5 * time.Millisecond)
	if !h.CloseIfEmpty(empty) {
		t.Fatal("an expired expectation kept the gate open")
	}
}

// Expecting lists what is still expected, with the time left, and drops
// what has expired.
func TestExpectingListsWhatIsStillComing(t *testing.T) {
	var g Gate
	if got := g.Expecting(); got != nil {
		t.Fatalf("nothing expected: %v", got)
	}
	if err := g.Expect("soon", time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := g.Expect("gone", time.Nanosecond); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Millisecond)
	got := g.Expecting()
	if len(got) != 1 || got["soon"] <= 0 || got["soon"] > time.Minute {
		t.Fatalf("Expecting: %v, want soon with at most a minute left", got)
	}
}
