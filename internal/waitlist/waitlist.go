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
// Once fired, each callback runs on a goroutine of its own, started in the
// order of registration: a callback that takes long (an answer written to a
// client that does not read) holds up no other. A barrier (AddBarrier) runs
// only once every callback registered before it has returned: an owner
// relies on that to learn when the answers already on their way have been
// written (process oweAnswersLocked). The list is running, and accepts
// callbacks, until the last one started has returned.
type List struct {
	fired       bool
	running     bool          // fired, and callbacks are queued or have not returned
	dispatching bool          // run is under way
	inflight    int           // callbacks started and not returned
	idle        chan struct{} // closed when inflight drops to 0 (a barrier waits on it)
	ws          []entry       // registered, not started: before Fire, and barriers after
}

// entry is one registered callback (by pointer, so withdraw finds it).
type entry struct {
	fn      *func()
	barrier bool
}

// Add registers fn, to run once the owner fires the list (at once, on a
// goroutine of its own, when the fired list still runs); the caller holds mu,
// the owner's lock, which withdraw takes. withdraw removes fn if it has not
// been started and reports whether it did. ok is false when the list has
// fired and every callback has run: fn is not kept, and the caller calls it
// as it sees fit.
func (l *List) Add(mu sync.Locker, fn func()) (withdraw func() bool, ok bool) {
	return l.add(mu, fn, false)
}

// AddBarrier is Add for a callback that must run after every callback
// registered before it has returned.
func (l *List) AddBarrier(mu sync.Locker, fn func()) (withdraw func() bool, ok bool) {
	return l.add(mu, fn, true)
}

func (l *List) add(mu sync.Locker, fn func(), barrier bool) (func() bool, bool) {
	if l.fired && !l.running {
		return nil, false
	}
	w := &fn
	if l.running && !barrier {
		l.inflight++
		go l.call(mu, w)
		return func() bool { return false }, true
	}
	l.ws = append(l.ws, entry{fn: w, barrier: barrier})
	if l.running && !l.dispatching {
		l.dispatching = true
		go l.run(mu)
	}
	return func() bool {
		mu.Lock()
		defer mu.Unlock()
		if i := slices.IndexFunc(l.ws, func(e entry) bool { return e.fn == w }); i >= 0 {
			l.ws = slices.Delete(l.ws, i, i+1)
			return true
		}
		return false
	}, true
}

// Fire runs the registered callbacks, off the owner's lock mu, which the
// caller holds, and off its goroutine (an exit path of the reaper must not
// wait for an answer's write). A second Fire does nothing.
func (l *List) Fire(mu sync.Locker) {
	if l.fired {
		return
	}
	l.fired = true
	if len(l.ws) == 0 {
		return
	}
	l.running, l.dispatching = true, true
	go l.run(mu)
}

// run starts the queued callbacks in order and runs the barriers, each once
// those started before it have returned; it ends when none is queued (the
// last callback to return then ends the running).
func (l *List) run(mu sync.Locker) {
	mu.Lock()
	defer mu.Unlock()
	for {
		if len(l.ws) == 0 {
			l.dispatching = false
			if l.inflight == 0 {
				l.running = false
			}
			return
		}
		e := l.ws[0]
		if e.barrier {
			if l.inflight > 0 {
				l.waitIdleLocked(mu) // e may be withdrawn meanwhile: look again
				continue
			}
			l.ws = l.ws[1:]
			mu.Unlock()
			(*e.fn)()
			mu.Lock()
			continue
		}
		l.ws = l.ws[1:]
		l.inflight++
		go l.call(mu, e.fn)
	}
}

func (l *List) call(mu sync.Locker, fn *func()) {
	(*fn)()
	mu.Lock()
	if l.inflight--; l.inflight == 0 {
		if l.idle != nil {
			close(l.idle)
			l.idle = nil
		}
		if !l.dispatching && len(l.ws) == 0 {
			l.running = false
		}
	}
	mu.Unlock()
}

// waitIdleLocked waits, off mu, until no started callback runs.
func (l *List) waitIdleLocked(mu sync.Locker) {
	for l.inflight > 0 {
		if l.idle == nil {
			l.idle = make(chan struct{})
		}
		idle := l.idle
		mu.Unlock()
		<-idle
		mu.Lock()
	}
}
