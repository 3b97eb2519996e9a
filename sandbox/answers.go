package sandbox

import (
	"fmt"
	"sync/atomic"

	"github.com/containerd/errdefs"
)

// A WaitSandbox is answered from the pod's waiters once it stops, on a
// goroutine of their own. ShutdownSandbox can remove the pod while such an
// answer is still being written (the stop that fired them has returned to
// the client, which shuts the pod down next). An in-place upgrade that went
// ahead then would leave the answer to the next binary, which does not know
// the pod and would say NotFound: so a pod that leaves counts the answers
// still on their way, and Handable makes the upgrade wait for them.

// leave marks p as gone from the service: its waiters' answers still to be
// written are counted in owed until they have been.
func (p *pod) leave(owed *atomic.Int32) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.owed = owed
	p.oweLocked()
}

// oweLocked counts in p.owed the answers registered so far, until the last
// of them has run: a barrier of the waiters runs once they have. Nothing is
// owed when every waiter has run. The caller holds p.mu and has set p.owed.
func (p *pod) oweLocked() {
	owed := p.owed
	if _, ok := p.waiters.AddBarrier(&p.mu, func() { owed.Add(-1) }); ok {
		owed.Add(1)
	}
}

// Handable reports whether the pods can be handed to another binary now:
// FailedPrecondition while WaitSandbox answers for pods already shut down
// are being written.
func (s *Service) Handable() error {
	if n := s.answersOwed.Load(); n > 0 {
		return fmt.Errorf("%d WaitSandbox answer(s) for shut-down sandboxes still being written: %w", n, errdefs.ErrFailedPrecondition)
	}
	return nil
}
