package process

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containerd/errdefs"

	shimio "github.com/example/containerd-shim-example-v2/io"
	"github.com/example/containerd-shim-example-v2/reaper"
)

// OnExit answers what Wait would, once, without a parked goroutine; a
// withdrawn callback is never called.
func TestOnExit(t *testing.T) {
	c := &Container{ID: "c1", Bundle: t.TempDir()}
	p := newProcess(c, "exec1", shimio.Config{}, nil)

	got := make(chan Snapshot, 4)
	var calls atomic.Int32
	p.OnExit(func(st Snapshot) { calls.Add(1); got <- st })
	withdrawn := p.OnExit(func(Snapshot) { t.Error("a withdrawn callback was called") })
	if !withdrawn() {
		t.Fatal("withdraw before the exit reported false")
	}
	if withdrawn() {
		t.Error("a second withdraw reported true")
	}
	late := p.OnExit(func(st Snapshot) { got <- st })

	select {
	case st := <-got:
		t.Fatalf("called before the exit: %+v", st)
	case <-time.After(50 * time.Millisecond):
	}
	at := time.Now()
	p.recordExit(reaper.Exit{Pid: 1234, Status: 7, Time: at})
	for range 2 {
		select {
		case st := <-got:
			if st.ExitCode != 7 || !st.ExitedAt.Equal(at) || st.Status != Stopped {
				t.Errorf("callback got %+v, want exit 7 at %v, stopped", st, at)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("a callback was not called after the exit")
		}
	}
	if late() {
		t.Error("withdraw after the exit reported true")
	}

	// Registered after the exit: called at once, with the same state.
	p.OnExit(func(st Snapshot) { got <- st })
	select {
	case st := <-got:
		if st.ExitCode != 7 {
			t.Errorf("after the exit: %+v", st)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a callback registered after the exit was not called")
	}
	p.mu.Lock()
	p.markExitedLocked() // a second mark (delete after exit) calls nobody again
	p.mu.Unlock()
	time.Sleep(50 * time.Millisecond)
	if n := calls.Load(); n != 1 {
		t.Errorf("first callback called %d times, want 1", n)
	}
}

// A created process being deleted takes no other request: Delete lets go of
// the lock while the runtime deletes it, and a Start slipping in would run a
// process nothing reports the exit of. A Kill of an exec not started is
// refused, and one of an exec that has finished is NotFound.
func TestNoStartWhileDeleting(t *testing.T) {
	c := &Container{ID: "c1", Bundle: t.TempDir(), execs: map[string]*Process{}}
	p := newProcess(c, "exec1", shimio.Config{}, nil)
	p.mu.Lock()
	p.deleting = true
	p.mu.Unlock()
	if err := p.Start(context.Background(), func(int) { t.Error("started") }); !errdefs.IsFailedPrecondition(err) {
		t.Errorf("Start while deleting: %v, want FailedPrecondition", err)
	}
	q := newProcess(c, "exec2", shimio.Config{}, nil)
	if err := q.Kill(context.Background(), 9, false); !errdefs.IsFailedPrecondition(err) {
		t.Errorf("Kill of a created exec: %v, want FailedPrecondition", err)
	}
	q.recordExit(reaper.Exit{Pid: 1 << 30, Status: 0, Time: time.Now()})
	if err := q.Kill(context.Background(), 9, false); !errdefs.IsNotFound(err) {
		t.Errorf("Kill of a finished exec: %v, want NotFound", err)
	}
}
