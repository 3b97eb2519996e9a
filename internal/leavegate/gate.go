// Package leavegate makes a shim daemon's decision to leave one step with
// the refusal of every create after it.
//
// A daemon leaves when it holds nothing: after a task Shutdown, after the
// last pod's ShutdownSandbox, or when containerd seems to have abandoned it.
// It exits some time after deciding (it flushes its events first, for up to
// seconds while containerd is slow). A task or pod created in between, on a
// connection that was already open, would be left behind by the exit:
// created in the runtime, mounted, with nobody to delete it. The Task and
// Sandbox services are separate, so the check "nothing held, nothing being
// created" has to span both: each records what it creates under the gate
// (Admit), and a decision to leave is taken under the same lock
// (CloseIfEmpty). Once closed, the gate stays closed.
//
// A task can also be expected (Expect): `start` found this daemon for the
// task's group and containerd is about to send its Create. Until that
// Create is admitted (AdmitTask) or the expectation expires, the gate does
// not close: the group's last other task, deleted in between, would
// otherwise make the daemon leave under the coming Create.
package leavegate

import (
	"fmt"
	"sync"
	"time"

	"github.com/containerd/errdefs"
)

// ErrLeaving is Admit's answer once the daemon has decided to leave:
// FailedPrecondition, since the caller has to start another shim.
var ErrLeaving = fmt.Errorf("the shim is shutting down: %w", errdefs.ErrFailedPrecondition)

// Gate is shared by every service of one daemon; the zero value is open.
//
// Locking: mu is taken before the services' own locks (record and empty run
// under it), never after: no service may call the gate with its lock held.
type Gate struct {
	mu     sync.Mutex
	closed bool
	// expected holds the task ids whose Create is on its way, each with
	// the time it is no longer waited for.
	expected map[string]time.Time
}

// Expect records that the Create of task id is on its way: until it is
// admitted or ttl has passed, CloseIfEmpty does not close the gate. Once
// the daemon has decided to leave, it returns ErrLeaving.
func (g *Gate) Expect(id string, ttl time.Duration) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return ErrLeaving
	}
	if g.expected == nil {
		g.expected = make(map[string]time.Time)
	}
	g.expected[id] = time.Now().Add(ttl)
	return nil
}

// AdmitTask is Admit for the Create of task id, which it no longer expects
// whatever record says: a Create that failed is not coming again.
func (g *Gate) AdmitTask(id string, record func() error) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	delete(g.expected, id)
	if g.closed {
		return ErrLeaving
	}
	return record()
}

// Forget withdraws the expectation of task id's Create: one refused before
// it came to AdmitTask (a bad request) is not coming again either.
func (g *Gate) Forget(id string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	delete(g.expected, id)
}

// Expecting returns the tasks whose Create is still expected, each with
// the time it is still waited for: what an in-place upgrade hands to the
// next binary, which Expects them again (a duration, since the two
// processes' monotonic clocks differ).
func (g *Gate) Expecting() map[string]time.Duration {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.expectingLocked() {
		return nil
	}
	now := time.Now()
	out := make(map[string]time.Duration, len(g.expected))
	for id, until := range g.expected {
		out[id] = until.Sub(now)
	}
	return out
}

// expectingLocked reports whether a Create is still expected, forgetting
// the expectations that have expired. g.mu must be held.
func (g *Gate) expectingLocked() bool {
	now := time.Now()
	for id, until := range g.expected {
		if now.After(until) {
			delete(g.expected, id)
		}
	}
	return len(g.expected) > 0
}

// Admit runs record, which must make the new task or pod visible to the
// emptiness checks passed to CloseIfEmpty, unless the daemon has decided to
// leave; then it returns an error of class FailedPrecondition. record's
// own error is returned as it is.
func (g *Gate) Admit(record func() error) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return ErrLeaving
	}
	return record()
}

// CloseIfEmpty closes the gate if empty reports that nothing is held or
// being created, and reports whether the daemon may leave: true at most
// once, to the call that closed it, so that one decision leads to one exit.
func (g *Gate) CloseIfEmpty(empty func() bool) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed || g.expectingLocked() || !empty() {
		return false
	}
	g.closed = true
	return true
}

// Closed reports whether the daemon has decided to leave. An in-place
// upgrade asks first: a successor would take over a daemon with nothing
// left to serve, and stay until the abandonment timeout.
func (g *Gate) Closed() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.closed
}
