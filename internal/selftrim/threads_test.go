package selftrim

import (
	"runtime"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// A burst of blocking system calls leaves threads behind; EndIdleThreads
// ends some of them, and the process goes on working.
func TestEndIdleThreads(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1)) // as in the daemon
	blockThreads(8, 50*time.Millisecond)
	before := threads()
	if before < 6 {
		t.Skipf("only %d threads after the burst: nothing to end", before)
	}
	// On a busy machine (the other packages' tests run beside this one) an
	// ended thread can take longer to leave the count than EndIdleThreads
	// waits, and it gives up after two such misses: try a few times.
	ended := 0
	for try := 0; try < 5 && ended == 0; try++ {
		ended = EndIdleThreads(2, time.Second)
	}
	time.Sleep(50 * time.Millisecond)
	after := threads()
	t.Logf("threads %d -> %d (%d ended)", before, after, ended)
	if ended == 0 || after >= before {
		t.Fatalf("threads %d -> %d, %d ended: want fewer", before, after, ended)
	}
	// Still working: goroutines run and block as before.
	done := make(chan struct{})
	go func() { _ = unix.Nanosleep(&unix.Timespec{Nsec: 1e6}, nil); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("a goroutine did not run after the threads were ended")
	}
}

// ReserveThreads leaves the process with the threads it asked for, idle
// and reused: goroutines that block afterwards start none.
func TestReserveThreads(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1)) // as in the daemon
	want := threads() + 4
	ReserveThreads(want)
	time.Sleep(20 * time.Millisecond)
	got := threads()
	if got < want {
		t.Fatalf("%d threads after ReserveThreads(%d)", got, want)
	}
	blockThreads(3, 20*time.Millisecond)
	if after := threads(); after > got {
		t.Errorf("threads %d -> %d: blocking goroutines started threads though %d were idle", got, after, got-want+4)
	}
}

// blockThreads runs n goroutines at once that each block their thread in a
// system call for d, as a burst of forks or file writes does, and returns
// when all are done.
func blockThreads(n int, d time.Duration) {
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ts := unix.NsecToTimespec(d.Nanoseconds())
			_ = unix.Nanosleep(&ts, nil)
		}()
	}
	wg.Wait()
}
