package condwait

import (
	"sync"
	"testing"
	"time"
)

func TestUntilReturnsWhenDone(t *testing.T) {
	var mu sync.Mutex
	c := sync.NewCond(&mu)
	ready := false
	go func() {
		time.Sleep(10 * time.Millisecond)
		mu.Lock()
		ready = true
		c.Broadcast()
		mu.Unlock()
	}()
	mu.Lock()
	defer mu.Unlock()
	if !Until(c, 10*time.Second, func() bool { return ready }) {
		t.Fatal("Until reported a timeout although the condition became true")
	}
}

func TestUntilGivesUpAtTheDeadline(t *testing.T) {
	var mu sync.Mutex
	c := sync.NewCond(&mu)
	mu.Lock()
	defer mu.Unlock()
	start := time.Now()
	if Until(c, 20*time.Millisecond, func() bool { return false }) {
		t.Fatal("Until reported done for a condition that never holds")
	}
	if waited := time.Since(start); waited < 20*time.Millisecond {
		t.Fatalf("gave up after %v, before the deadline", waited)
	}
}
