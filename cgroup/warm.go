package cgroup

import (
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// MigrationWarmer starts the kernel's wait for a cgroup migration ahead of
// the runtime's own.
//
// Why: moving a process into a cgroup (runc writes its init's pid to
// cgroup.procs) write-locks cgroup_threadgroup_rwsem, a per-CPU rwsem whose
// writers first wait for an RCU grace period, unless another writer held it
// within about the last grace period. On an otherwise quiet node that wait is
// 7-20 ms on a 2-vCPU VM, and `runc create` pays it in full. The wait is
// global, not per cgroup: a migration begun some milliseconds before the
// runtime's shortens the runtime's wait to the rest of the same grace period,
// or to nothing once it has passed. The shim sometimes knows a container is
// coming before containerd asks for it: when its daemon starts (containerd
// starts a shim to create a task, or a pod, in it), and when a pod has
// started (CRI creates the pod's first container next). (After a pause
// container starts, in podsandbox mode, a warming measured no gain: CRI's
// next container comes after the window.)
//
// How: Kick runs a migration that changes nothing but takes the lock: a
// pod's holder moved into the cgroup it is in, or at the daemon's start one
// of its own threads (MoveOwnThread). What moves must be something nobody
// else moves meanwhile, or the write could undo their move.
//
// The zero value is ready; a nil *MigrationWarmer is off. Kick never blocks
// its caller and runs at most one warming at a time; a failure (the process
// gone already) only loses the head start.
type MigrationWarmer struct {
	running atomic.Bool
	done    atomic.Uint64 // warmings that completed without error
}

// Kick runs move, a migration that changes nothing (AddProcess of a
// process into the cgroup it is in), in the background, unless a warming is
// under way.
func (w *MigrationWarmer) Kick(move func() error) {
	if w == nil || !w.running.CompareAndSwap(false, true) {
		return
	}
	go func() {
		defer w.running.Store(false)
		if err := w.Warm(move); err != nil {
			slog.Debug("cgroup migration warm-up failed", "error", err)
		}
	}()
}

// Warm is Kick's work in the caller's goroutine: it returns once the kernel
// has taken and released the lock.
func (w *MigrationWarmer) Warm(move func() error) error {
	if err := move(); err != nil {
		return err
	}
	w.done.Add(1)
	return nil
}

// Warmed counts the warmings that completed without error.
func (w *MigrationWarmer) Warmed() uint64 { return w.done.Load() }

// MoveOwnThread moves the calling thread into the cgroup it is in: a
// migration that changes nothing, for a warming when the shim has no process
// of its own to move yet (a daemon just started). Only a process nobody
// moves meanwhile may do it: under v1 the thread could otherwise be put back
// where the rest of the process was moved from.
func MoveOwnThread(root string) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	data, err := os.ReadFile("/proc/thread-self/cgroup")
	if err != nil {
		return err
	}
	v2 := Unified(root)
	cg, err := Parse(root, data, v2)
	if err != nil {
		return err
	}
	tid := []byte(strconv.Itoa(unix.Gettid()))
	if v2 {
		return os.WriteFile(filepath.Join(cg.Dir(""), "cgroup.threads"), tid, 0)
	}
	// v1: one hierarchy is enough, the lock is shared by all of them.
	for _, c := range []string{"memory", "pids", "cpu"} {
		if dir := cg.Dir(c); dir != "" {
			return os.WriteFile(filepath.Join(dir, "tasks"), tid, 0)
		}
	}
	return errors.New("no memory, pids or cpu hierarchy for this thread")
}
