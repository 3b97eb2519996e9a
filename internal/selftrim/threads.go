package selftrim

import (
	"bytes"
	"os"
	"runtime"
	"strconv"
	"sync"
	"time"
)

// EndIdleThreads ends threads the Go runtime keeps idle, until keep remain
// or none is idle. Go never ends a thread it has started: a burst of
// blocking system calls (forking runtime commands, writing cgroup files)
// leaves threads parked for the process's life, each with its signal stack
// and scheduler state (about 25 KiB of anonymous memory per thread in a shim,
// measured). A goroutine that exits while locked to its thread ends that
// thread; the scheduler then hands its P to an idle thread, or starts a new
// one when none is idle, which is where this stops.
//
// The caller must make sure that no running child is tied to a thread (a
// parent-death signal follows the forking thread; see reaper.Start), and
// that nothing else depends on a particular idle thread; it may hold that
// guarantee for up to budget (each thread takes some hundred microseconds,
// a miss up to 20 ms), after which it stops. It returns how many threads it
// ended.
func EndIdleThreads(keep int, budget time.Duration) int {
	ended, misses := 0, 0
	stop := time.Now().Add(budget)
	for before := threads(); before > keep && misses < 2 && time.Now().Before(stop); {
		done := make(chan struct{})
		go func() {
			runtime.LockOSThread()
			close(done)
			// Returning while locked ends the thread.
		}()
		<-done
		// This goroutine goes on on another thread, idle before or new;
		// the ended one leaves the count within moments (up to 20 ms on a
		// busy machine).
		after := before
		for deadline := time.Now().Add(20 * time.Millisecond); after >= before && time.Now().Before(deadline); {
			time.Sleep(200 * time.Microsecond)
			after = threads()
		}
		if after == 0 {
			return ended
		}
		if after >= before {
			// Either the goroutine ran on the main thread, which the
			// runtime parks instead of ending (once), or no thread was
			// idle and the scheduler started one in its place: after two
			// such misses in a row, nothing idle is left.
			misses++
			continue
		}
		ended += before - after
		misses = 0
		before = after
	}
	return ended
}

// ReserveThreads makes the Go runtime start threads until the process has
// total, which then wait idle in its pool. The runtime starts a thread
// whenever one blocks in a system call while work waits, and it cannot
// survive a refused start: a clone failing (a pids cgroup or the node's PID
// space full) is a fatal error. A process that already has the threads its
// work needs never asks. Each goroutine locked to a thread at the same time
// holds a thread of its own (an idle one first, then a new one); unlocked,
// the threads stay. At most total goroutines are locked.
func ReserveThreads(total int) {
	var release sync.WaitGroup
	release.Add(1)
	defer release.Done()
	for n := 0; n < total && threads() < total; n++ {
		locked := make(chan struct{})
		go func() {
			runtime.LockOSThread()
			close(locked)
			release.Wait()
			runtime.UnlockOSThread()
		}()
		<-locked
	}
}

// threads is the process's thread count, from /proc/self/status (0 if it
// cannot be read).
func threads() int {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	_, rest, ok := bytes.Cut(b, []byte("\nThreads:"))
	if !ok {
		return 0
	}
	line, _, _ := bytes.Cut(rest, []byte("\n"))
	n, err := strconv.Atoi(string(bytes.TrimSpace(line)))
	if err != nil {
		return 0
	}
	return n
}
