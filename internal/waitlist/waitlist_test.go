package waitlist

import (
	"sync"
	"testing"
	"time"
)

// Callbacks registered before the event run once it fires, in order and off
// the caller's goroutine; a withdrawn one never runs; one added while the
// fired ones still run joins them and runs last; once all have run, Add
// reports false.
func TestList(t *testing.T) {
	var mu sync.Mutex
	var l List
	ran := make(chan int, 4)
	gate := make(chan struct{})
	mu.Lock()
	_, ok1 := l.Add(&mu, func() { <-gate; ran <- 1 })
	withdraw, ok2 := l.Add(&mu, func() { ran <- 2 })
	_, ok3 := l.Add(&mu, func() { ran <- 3 })
	mu.Unlock()
	if !ok1 || !ok2 || !ok3 {
		t.Fatal("Add before the event refused")
	}
	if !withdraw() {
		t.Fatal("withdraw of a callback not started reported false")
	}
	mu.Lock()
	l.Fire(&mu)
	l.Fire(&mu) // a second one does nothing
	if _, ok := l.Add(&mu, func() { ran <- 4 }); !ok {
		t.Error("Add while the fired callbacks run refused")
	}
	mu.Unlock()
	close(gate)
	var got []int
	for len(got) < 3 {
		select {
		case n := <-ran:
			got = append(got, n)
		case <-time.After(5 * time.Second):
			t.Fatalf("ran %v, want [1 3 4]", got)
		}
	}
	if got[0] != 1 || got[1] != 3 || got[2] != 4 {
		t.Fatalf("ran %v, want [1 3 4]", got)
	}
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
		mu.Lock()
		_, ok := l.Add(&mu, func() { ran <- 5 })
		mu.Unlock()
		if !ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("Add still accepted after every callback ran")
		}
		<-ran // accepted just before the run ended: it ran
	}
	select {
	case n := <-ran:
		t.Fatalf("callback %d ran too", n)
	case <-time.After(50 * time.Millisecond):
	}
	if withdraw() {
		t.Error("a second withdraw reported true")
	}
}

// A list fired with nothing registered refuses later Adds at once.
func TestFireEmpty(t *testing.T) {
	var mu sync.Mutex
	var l List
	mu.Lock()
	defer mu.Unlock()
	l.Fire(&mu)
	if _, ok := l.Add(&mu, func() {}); ok {
		t.Error("Add after an empty fire accepted")
	}
}
