package io

import (
	"sync"
	"time"
)

// MinLogRate is the lowest rate= a file:// log accepts, in bytes per second:
// slower than this, a container printing a stack trace would stall for minutes.
const MinLogRate = 1 << 10

// rateLimiter paces the writers of one log file to an average of rate bytes
// per second, allowing bursts of one second's worth. A writer that runs
// ahead waits before writing; its relay stops reading meanwhile, so the
// container's pipe fills and the container is slowed in write(2). Nothing is
// dropped. Once the process has exited, release lets the rest out at full
// speed, so Delete does not wait on the pace.
//
// Locking: mu guards tokens and last; released is closed once.
type rateLimiter struct {
	rate float64 // bytes per second

	mu     sync.Mutex
	tokens float64 // may go negative: the debt the next writers wait off
	last   time.Time

	releaseOnce sync.Once
	released    chan struct{}
}

func newRateLimiter(bytesPerSecond int64) *rateLimiter {
	r := float64(bytesPerSecond)
	return &rateLimiter{rate: r, tokens: r, last: time.Now(), released: make(chan struct{})}
}

// wait takes n bytes' worth of tokens, sleeping off any debt first, or
// until interrupt has a token (a halt asked of the relay: the chunk in hand
// goes out early, and the relay halts before the next; its successor starts
// with a fresh second's worth anyway). A nil limiter never waits.
func (l *rateLimiter) wait(n int, interrupt <-chan struct{}) {
	if l == nil || l.isReleased() {
		return
	}
	l.mu.Lock()
	now := time.Now()
	l.tokens = min(l.rate, l.tokens+now.Sub(l.last).Seconds()*l.rate)
	l.last = now
	l.tokens -= float64(n)
	debt := -l.tokens
	l.mu.Unlock()
	if debt <= 0 {
		return
	}
	t := time.NewTimer(time.Duration(debt / l.rate * float64(time.Second)))
	defer t.Stop()
	select {
	case <-t.C:
	case <-l.released:
	case <-interrupt:
	}
}

// release stops pacing for good (the process has exited, or its IO closes).
func (l *rateLimiter) release() {
	if l == nil {
		return
	}
	l.releaseOnce.Do(func() { close(l.released) })
}

// isReleased reports whether release was called.
func (l *rateLimiter) isReleased() bool {
	select {
	case <-l.released:
		return true
	default:
		return false
	}
}
