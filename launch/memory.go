package launch

import (
	"runtime"
	"runtime/debug"
	"time"

	"github.com/example/containerd-shim-example-v2/internal/selftrim"
	"github.com/example/containerd-shim-example-v2/reaper"
	"github.com/example/containerd-shim-example-v2/service"
)

// Memory tuning of the daemon. Shims are many (one per pod) and mostly
// idle, so what an idle shim keeps resident is what it costs.
const (
	// gcPercent makes the collector run at 30% heap growth instead of 100%:
	// an idle shim's heap is small, so collections are cheap.
	gcPercent = 30
	// trimInterval is how often an idle daemon returns freed memory to the
	// kernel and drops its binary's pages it has stopped using.
	trimInterval = 30 * time.Second
	// maxProcs caps the Go scheduler's Ps: a shim's work is runtime calls and
	// relays, not parallel computation, and every P carries caches. With a
	// second P the scheduler wakes a spinning thread for nearly every
	// goroutine it readies, and those futex wake-ups were a quarter of the
	// shim's CPU per exec probe (CRI ExecSync: 1.6-1.9 ms instead of 2.3-2.7
	// per probe, 1 vs 2).
	maxProcs = 1
)

// tuneMemory applies the runtime settings above; call it first in the daemon.
func tuneMemory() {
	selftrim.NoHugePages()
	debug.SetGCPercent(gcPercent)
	if runtime.GOMAXPROCS(0) > maxProcs {
		runtime.GOMAXPROCS(maxProcs)
	}
}

// trimmer decides when the daemon trims its memory: quietPeriod after the
// last request of a burst (so a shim that has just created its container is
// lean within seconds, not after trimInterval), and at least every
// trimInterval while requests keep coming or output keeps flowing. An idle
// daemon with nothing new to trim wakes only every trimInterval.
type trimmer struct {
	touched chan struct{} // a request arrived; buffered, one pending is enough
	trim    func()        // selftrim.Trim; replaced in tests
}

// quietPeriod is how long the daemon waits after a request before trimming.
const quietPeriod = 2 * time.Second

// minThreads is the threads the daemon keeps. An idle daemon needs four:
// the main thread, the runtime's monitor, the signal thread os/signal keeps
// for the reaper's SIGCHLD and the template thread it implies. The rest are a
// request's peak (a fork or a file write blocks its thread, and the
// scheduler hands the P to another), started at once (reserveThreads) and
// never ended: the Go runtime dies when the kernel refuses it a thread, and
// a daemon trimmed to four asks for one at the next request, or even when its
// monitor wakes the scavenger. A daemon whose pids cgroup (or the node's PID
// space) is full must answer "no" to the requests that need a fork and live
// on for its containers, as the stock shim (about eleven threads) does.
// Threads beyond these that are idle are ended at a trim
// (selftrim.EndIdleThreads). About 20 KiB each.
const minThreads = 8

// reserveThreads starts the threads minThreads counts while nothing is
// short; call it before the daemon serves.
func reserveThreads() { selftrim.ReserveThreads(minThreads) }

// threadTrimBudget bounds how long the trim ends threads: runtime commands
// wait to start meanwhile (WhileUntethered).
const threadTrimBudget = 100 * time.Millisecond

// newTrimmer returns a trimmer whose trim ends idle threads, when no child
// tied to a thread runs (r.WhileUntethered), and then gives memory back.
func newTrimmer(r *reaper.Reaper) *trimmer {
	return &trimmer{touched: make(chan struct{}, 1), trim: func() {
		r.WhileUntethered(func() { selftrim.EndIdleThreads(minThreads, threadTrimBudget) })
		selftrim.Trim()
	}}
}

// Touch records a request. It never blocks: one pending touch says all.
func (t *trimmer) Touch() {
	select {
	case t.touched <- struct{}{}:
	default:
	}
}

// Request records a request by its ttrpc full method name: work counts as a touch; a
// metrics or status poll (service.IsPoll) does not. containerd 2.4's CRI polls every pod
// and container every second, and were polls touches, the trim that follows a burst of
// work (the pod's start) would wait for the interval instead of quietPeriod.
func (t *trimmer) Request(fullMethod string) {
	if !service.IsPoll(fullMethod) {
		t.Touch()
	}
}

// Run trims until stop is closed. Only Run's goroutine owns the timer.
func (t *trimmer) Run(stop <-chan struct{}, quiet, interval time.Duration) {
	lastTrim := time.Now()
	timer := time.NewTimer(quiet)
	defer timer.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.touched:
			// Trim after a quiet spell, but never later than the interval
			// after the last trim: a steady trickle of requests must not
			// postpone it forever.
			due := time.Now().Add(quiet)
			if limit := lastTrim.Add(interval); limit.Before(due) {
				due = limit
			}
			timer.Reset(time.Until(due))
		case <-timer.C:
			t.trim()
			lastTrim = time.Now()
			timer.Reset(interval)
		}
	}
}
