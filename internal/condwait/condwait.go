// Package condwait waits on a sync.Cond with a deadline, which sync.Cond
// itself cannot do.
package condwait

import (
	"sync"
	"time"
)

// Until waits on c until done reports true or timeout has passed, and returns
// done's last answer. The caller holds c.L (done is called with it held) and
// holds it again on return. Whoever makes done true must Broadcast on c.
func Until(c *sync.Cond, timeout time.Duration, done func() bool) bool {
	deadline := time.Now().Add(timeout)
	// A timer wakes the waiter at the deadline. It takes c.L before
	// broadcasting, so the wake-up cannot fall between a check and a Wait.
	t := time.AfterFunc(timeout, func() {
		c.L.Lock()
		c.Broadcast()
		c.L.Unlock()
	})
	defer t.Stop()
	for !done() {
		if !time.Now().Before(deadline) {
			return false
		}
		c.Wait()
	}
	return true
}
