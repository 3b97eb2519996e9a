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
//
// Once fired, the list is run by one goroutine, in order, until it finds
// none left; a callback added meanwhile joins the queue, so it runs after
// every one registered before it has returned. An owner relies on that to
// learn when the answers already on their way have been written (process
// oweAnswersLocked): a callback that had merely been started when the event
// fired would otherwise be nobody's to wait for.
type List struct {
	fired   bool
	running bool // the firing goroutine has not yet found the queue empty
	ws      []*func()
}

// Add registers fn, to run once the owner fires the list, after the
// callbacks registered before it; the caller holds mu, the owner's lock,
// which withdraw takes. withdraw removes fn if it has not been started and
// reports whether it did. ok is false when the list has fired and every
// callback has run: fn is not kept, and the caller calls it as it sees fit.
func (l *List) Add(mu sync.Locker, fn func()) (withdraw func() bool, ok bool) {
	if l.fired && !l.running {
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
// off the owner's lock mu, which the caller holds, and off its goroutine (an
// exit path of the reaper must not wait for an answer's write). The
// goroutine takes mu only to take the next callbacks. A second Fire does
// nothing.
func (l *List) Fire(mu sync.Locker) {
	if l.fired {
		return
	}
	l.fired = true
	if len(l.ws) == 0 {
		return
	}
	l.running = true
	go l.run(mu)
}

func (l *List) run(mu sync.Locker) {
	for {
		mu.Lock()
		ws := l.ws
		l.ws = nil
		if len(ws) == 0 {
			l.running = false
			mu.Unlock()
			return
		}
		mu.Unlock()
		for _, w := range ws {
			(*w)()
		}
	}
}
