package launch

import (
	"os"
	"sync/atomic"
	"time"
)

// abandonTimeout is how long a daemon may sit with no task (none created, none
// whose Create is in flight) and no request before it leaves on its own.
// containerd follows a shim's `start` with Create, and its last Delete with
// Shutdown, within moments; a daemon empty and unspoken-to for this long was
// abandoned (containerd died or gave up between the two) and would otherwise
// live until the machine reboots. Leaving is safe: a restarted containerd
// finds the bundle, fails to connect and cleans up through `delete`.
const abandonTimeout = 2 * time.Minute

// AbandonTimeoutEnv overrides abandonTimeout with a Go duration ("30s"): for
// tests, and for operators who want abandoned shims gone sooner. Passed to
// the daemon through containerd's environment for shims.
const AbandonTimeoutEnv = "EXAMPLE_SHIM_ABANDON_TIMEOUT"

// minAbandonTimeout is the shortest timeout the environment may set: the
// watch ticks every quarter of it, and a tick of a few nanoseconds would
// either panic (time.NewTicker refuses 0) or keep a CPU busy, and no
// containerd dials its shim that fast after `start` anyway.
const minAbandonTimeout = 100 * time.Millisecond

// abandonTimeoutFromEnv returns the timeout in effect: the environment's if
// it is a positive duration (at least minAbandonTimeout), abandonTimeout
// otherwise.
func abandonTimeoutFromEnv() time.Duration {
	if d, err := time.ParseDuration(os.Getenv(AbandonTimeoutEnv)); err == nil && d > 0 {
		return max(d, minAbandonTimeout)
	}
	return abandonTimeout
}

// lastRequest records when the daemon last received a request.
type lastRequest struct{ unixNano atomic.Int64 }

func (l *lastRequest) Touch() { l.unixNano.Store(time.Now().UnixNano()) }
func (l *lastRequest) Since() time.Duration {
	return time.Since(time.Unix(0, l.unixNano.Load()))
}

// watchAbandoned closes the returned channel once the daemon has held no task
// and received no request for timeout, and leave agrees (the daemon's leave
// gate: a Create may have come in since the count). It checks every
// timeout/4, so an abandoned daemon leaves between timeout and
// 1.25×timeout; stop ends it.
func watchAbandoned(stop <-chan struct{}, tasks func() int, last *lastRequest, timeout time.Duration, leave func() bool) <-chan struct{} {
	abandoned := make(chan struct{})
	go func() {
		t := time.NewTicker(timeout / 4)
		defer t.Stop()
		var emptySince time.Time
		for {
			select {
			case <-stop:
				return
			case now := <-t.C:
				if tasks() > 0 {
					emptySince = time.Time{}
					continue
				}
				if emptySince.IsZero() {
					emptySince = now
				}
				if now.Sub(emptySince) >= timeout && last.Since() >= timeout {
					if !leave() {
						emptySince = time.Time{}
						continue
					}
					close(abandoned)
					return
				}
			}
		}
	}()
	return abandoned
}
