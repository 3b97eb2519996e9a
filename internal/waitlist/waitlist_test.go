package waitlist

import (
	"sync"
	"testing"
	"time"
)

// Callbacks registered before the event run once it fires, off the caller's
// goroutine, none held up by another that takes long; a withdrawn one never
// runs; one added while a fired one still runs runs too; a barrier runs only
// once those registered before it have returned; once all have run, Add
// reports false.
func TestList(t *testing.T) {
	var mu sync.Mutex
	var l List
	ran := make(chan int, 8)
	gate := make(chan struct{})
	mu.Lock()
	_, ok1 := l.Add(&mu, func() { <-gate; ran <- 1 })
	withdraw, ok2 := l.Add(&mu, func() { ran <- 2 })
	_, ok3 := l.Add(&mu, func() { ran <- 3 })
	_, okb := l.AddBarrier(&mu, func() { ran <- 10 })
	mu.Unlock()
	if !ok1 || !ok2 || !ok3 || !okb {
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
	next := func(want int) {
		t.Helper()
		select {
		case n := <-ran:
			if n != want {
				t.Fatalf("ran %d, want %d", n, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%d did not run", want)
		}
	}
	// 3 and 4 run while 1 is held; the barrier waits for 1.
	got := map[int]bool{}
	for range 2 {
		select {
		case n := <-ran:
			got[n] = true
		case <-time.After(5 * time.Second):
			t.Fatalf("ran %v while the first callback was held, want 3 and 4", got)
		}
	}
	if !got[3] || !got[4] {
		t.Fatalf("ran %v while the first callback was held, want 3 and 4", got)
	}
	select {
	case n := <-ran:
		t.Fatalf("%d ran while the first callback was held", n)
	case <-time.After(50 * time.Millisecond):
	}
	close(gate)
	next(1)
	next(10)
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
