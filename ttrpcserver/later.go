package ttrpcserver

import "sync/atomic"

// Deferred is a handler's result that says "the answer comes later": the
// server calls its start function with the function that sends the answer,
// and the call stays open until that is called (once; later calls are
// ignored). It may be called from any goroutine, before or after start
// returns.
//
// It is for long polls such as the task API's Wait, which containerd's CRI
// keeps open for every container it runs: answered later, such a call holds
// no goroutine, no goroutine stack and no context of its own while it
// waits, only what the handler registers to answer it. If the connection
// closes (or the client's deadline passes) first, the server calls the
// abandon function start returned (when not nil) so that the handler can
// withdraw that registration; the answer is then dropped.
type Deferred struct {
	start func(answer func(resp any, err error)) (abandon func())
}

// Later returns a Deferred result that the server starts with start.
func Later(start func(answer func(resp any, err error)) (abandon func())) *Deferred {
	return &Deferred{start: start}
}

// pendingCall is a call answered Later and not yet answered.
type pendingCall struct {
	done    atomic.Bool // answered or abandoned: whoever sets it acts, once
	abandon func()      // set before the call is registered; nil: nothing to withdraw
}

// finish claims the call for its answer; false when it was already
// answered or abandoned.
func (p *pendingCall) finish() bool { return !p.done.Swap(true) }

// giveUp abandons the call unless it was answered, and reports whether it
// did.
func (p *pendingCall) giveUp() bool {
	if !p.finish() {
		return false
	}
	if p.abandon != nil {
		p.abandon()
	}
	return true
}
