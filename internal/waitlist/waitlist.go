// Package waitlist keeps the callbacks waiting for a one-time event of their
// owner (a process's exit, a pod's stop), so that a long poll such as Wait or
// WaitSandbox is answered when the event comes without a goroutine parked
// until then. The owner guards its List with its own mutex.
package waitlist

import (
	"slices"
	"sync"
)

// List is the callbacks registered and not yet run. The zero value is ready.
type List struct {
	fired bool
	ws    []*func()
}

// Add registers fn, to run when the owner fires the list; the caller holds
// mu, the owner's lock, which withdraw takes. withdraw removes fn if it has
// not been started and reports whether it did. ok is false when the list has
// fired already: fn is not kept, and the caller calls it as it sees fit.
func (l *List) Add(mu sync.Locker, fn func()) (withdraw func() bool, ok bool) {
	if l.fired {
		return nil, false
	}
	w := &fn
	l.ws = append(l.ws, w)
	return func() bool {
		mu.Lock()
		defer mu.Unlock()
		if i := slices.Index(l.ws, w); i >= 0 {
			l.ws = slices.Delete(l.ws, i, i+1)
			return true
		}
		return false
	}, true
}

// Fire runs the registered callbacks, in order, on a goroutine of their own:
// off the owner's lock, which the caller holds, and off its goroutine (an
// exit path of the reaper must not wait for an answer's write). Later Adds
// report false; a second Fire does nothing.
func (l *List) Fire() {
	if l.fired {
		return
	}
	l.fired = true
	ws := l.ws
	l.ws = nil
	if len(ws) == 0 {
		return
	}
	go func() {
		for _, w := range ws {
			(*w)()
		}
	}()
}
