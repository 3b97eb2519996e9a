package waitlist

import (
	"sync"
	"testing"
	"time"
)

// Callbacks registered before the event run once it fires, in order and off
// the caller's goroutine; a withdrawn one never runs; after the event Add
// reports false.
func TestList(t *testing.T) {
	var mu sync.Mutex
	var l List
	ran := make(chan int, 3)
	mu.Lock()
	_, ok1 := l.Add(&mu, func() { ran <- 1 })
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
	l.Fire()
	l.Fire() // a second one does nothing
	if _, ok := l.Add(&mu, func() { ran <- 4 }); ok {
		t.Error("Add after the event accepted")
	}
	mu.Unlock()
	var got []int
	for len(got) < 2 {
		select {
		case n := <-ran:
			got = append(got, n)
		case <-time.After(5 * time.Second):
			t.Fatalf("ran %v, want [1 3]", got)
		}
	}
	if got[0] != 1 || got[1] != 3 {
		t.Fatalf("ran %v, want [1 3]", got)
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
