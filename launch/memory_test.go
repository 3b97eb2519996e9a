package launch

import (
	"context"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/example/containerd-shim-example-v2/reaper"
)

// runTrimmer runs a trimmer whose trims are counted on the returned channel.
func runTrimmer(t *testing.T, quiet, interval time.Duration) (*trimmer, <-chan struct{}) {
	t.Helper()
	trims := make(chan struct{}, 100)
	tr := newTrimmer(reaper.New())
	tr.trim = func() { trims <- struct{}{} }
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() { tr.Run(stop, quiet, interval); close(done) }()
	t.Cleanup(func() { close(stop); <-done })
	return tr, trims
}

// A burst of requests is followed by a trim once the daemon is quiet, long
// before the periodic interval.
func TestTrimFollowsAQuietSpell(t *testing.T) {
	tr, trims := runTrimmer(t, 20*time.Millisecond, time.Hour)
	<-trims // the settling trim after start
	for range 5 {
		tr.Touch()
	}
	select {
	case <-trims:
	case <-time.After(10 * time.Second):
		t.Fatal("no trim after the requests stopped")
	}
	select {
	case <-trims:
		t.Fatal("a second trim without new requests")
	case <-time.After(100 * time.Millisecond):
	}
}

// Requests arriving more often than the quiet period do not postpone the
// trim past the interval.
func TestTrimNotPostponedForeverByRequests(t *testing.T) {
	tr, trims := runTrimmer(t, time.Hour, 50*time.Millisecond)
	deadline := time.After(10 * time.Second)
	for n := 0; n < 2; {
		select {
		case <-trims:
			n++
		case <-deadline:
			t.Fatalf("%d trims while requests kept coming, want 2", n)
		case <-time.After(5 * time.Millisecond):
			tr.Touch()
		}
	}
}

// Metrics polls arriving more often than the quiet period (containerd 2.4's CRI: every
// second) do not postpone the trim that follows a burst of work; work does.
func TestTrimNotPostponedByPolls(t *testing.T) {
	const quiet = 200 * time.Millisecond
	tr, trims := runTrimmer(t, quiet, time.Hour)
	<-trims // the settling trim after start
	tr.Request("/containerd.task.v3.Task/Start")
	start := time.Now()
	deadline := time.After(10 * time.Second)
	poll := time.NewTicker(quiet / 10)
	defer poll.Stop()
	for done := false; !done; {
		select {
		case <-trims:
			done = true
		case <-poll.C:
			tr.Request("/containerd.task.v3.Task/Stats")
			tr.Request("/containerd.runtime.sandbox.v1.Sandbox/SandboxMetrics")
		case <-deadline:
			t.Fatal("no trim while only polls came after the work")
		}
	}
	if took := time.Since(start); took < quiet {
		t.Fatalf("trimmed %v after the work, before the quiet period (%v)", took, quiet)
	}
	// Work keeps postponing it.
	for range 10 {
		tr.Request("/containerd.task.v3.Task/Exec")
		select {
		case <-trims:
			t.Fatal("trimmed while work kept coming within the quiet period")
		case <-time.After(quiet / 10):
		}
	}
}

// burstOfThreads leaves idle threads behind: goroutines blocked in a system
// call each hold a thread.
func burstOfThreads() {
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = unix.Nanosleep(&unix.Timespec{Nsec: 30e6}, nil)
		}()
	}
	wg.Wait()
}

func threadCount(t *testing.T) int {
	t.Helper()
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "Threads:"); ok {
			n, _ := strconv.Atoi(strings.TrimSpace(v))
			return n
		}
	}
	t.Fatal("no Threads line")
	return 0
}

// The daemon's trim ends idle threads, but never while a child tied to its
// forking thread runs (a runtime command started with a parent-death
// signal): such a child survives the trim, and the threads go at the next
// trim after its exit.
func TestTrimEndsThreadsButNotATetheredChild(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1)) // as in the daemon
	r := reaper.New()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go r.Run(ctx)
	trim := newTrimmer(r).trim

	burstOfThreads()
	cmd := exec.Command("sleep", "30")
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	exited, err := r.Start(cmd)
	if err != nil {
		t.Fatal(err)
	}
	burstOfThreads()
	before := threadCount(t)
	trim()
	select {
	case e := <-exited:
		t.Fatalf("the tethered child ended during the trim: %+v", e)
	case <-time.After(300 * time.Millisecond):
	}
	// The child dies only if its own forking thread is ended, which a trim
	// may or may not pick: that no thread at all was ended is the check.
	if after := threadCount(t); after < before {
		t.Errorf("threads %d -> %d: the trim ended threads while a tethered child ran", before, after)
	}
	_ = cmd.Process.Kill()
	<-exited

	// An ended thread can take a moment to leave the count, and a busy
	// machine can start one meanwhile: a few tries, as selftrim's test.
	var after int
	for try := 0; try < 5; try++ {
		burstOfThreads()
		before = threadCount(t)
		trim()
		time.Sleep(50 * time.Millisecond)
		if after = threadCount(t); after < before {
			return
		}
	}
	t.Fatalf("threads %d -> %d after a trim with no tethered child, five times: want fewer", before, after)
}
