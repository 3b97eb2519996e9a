package launch

import (
	"sync/atomic"
	"testing"
	"time"
)

func TestWatchAbandoned(t *testing.T) {
	// Long beside the 5 ms between requests: a loaded machine (CI with other
	// packages' tests beside it) left this goroutine unscheduled for 40 ms,
	// and the watch took the silence for abandonment.
	const timeout = 200 * time.Millisecond
	for _, tc := range []struct {
		name      string
		tasks     int32
		requests  bool // a request every 5 ms
		refused   bool // the leave gate says no: a Create came in since the count
		abandoned bool
	}{
		{"empty and silent", 0, false, false, true},
		{"holding a task", 1, false, false, false},
		{"empty but spoken to", 0, true, false, false},
		{"a create at the last moment", 0, false, true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var tasks atomic.Int32
			tasks.Store(tc.tasks)
			var last lastRequest
			last.Touch()
			stop := make(chan struct{})
			defer close(stop)
			var asked atomic.Int32
			leave := func() bool { asked.Add(1); return !tc.refused }
			abandoned := watchAbandoned(stop, func() int { return int(tasks.Load()) }, &last, timeout, leave)
			tick := time.NewTicker(5 * time.Millisecond)
			defer tick.Stop()
			end := time.After(5 * timeout)
			for {
				select {
				case <-abandoned:
					if !tc.abandoned {
						t.Fatal("left although not abandoned")
					}
					return
				case <-tick.C:
					if tc.requests {
						last.Touch()
					}
				case <-end:
					if tc.abandoned {
						t.Fatalf("still there after %v", 5*timeout)
					}
					if tc.refused && asked.Load() == 0 {
						t.Fatal("the leave gate was never asked")
					}
					return
				}
			}
		})
	}
}

// The environment's timeout: a positive Go duration, at least
// minAbandonTimeout (a few nanoseconds made the daemon's watch panic at
// start); anything else leaves the default.
func TestAbandonTimeoutFromEnv(t *testing.T) {
	for env, want := range map[string]time.Duration{
		"":     abandonTimeout,
		"30s":  30 * time.Second,
		"1ns":  minAbandonTimeout,
		"3ns":  minAbandonTimeout,
		"0":    abandonTimeout,
		"-5s":  abandonTimeout,
		"soon": abandonTimeout,
	} {
		t.Setenv(AbandonTimeoutEnv, env)
		got := abandonTimeoutFromEnv()
		if got != want {
			t.Errorf("%s=%q: %v, want %v", AbandonTimeoutEnv, env, got, want)
		}
		stop := make(chan struct{})
		watchAbandoned(stop, func() int { return 1 }, &lastRequest{}, got, func() bool { return true }) // must not panic
		close(stop)
	}
}
