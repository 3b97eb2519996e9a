package cgroup

import (
	"log/slog"
	"sync/atomic"
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
// coming before containerd asks for it: when a pod has started, CRI creates
// its first container next. (After a pause container starts, podsandbox
// mode, a warming measured no gain: CRI's container comes after the window.)
//
// How: Kick moves a process the shim owns into the cgroup it already is in
// (a pod's holder), which changes nothing but takes the lock. It must be a
// process nobody else moves, or the write could undo a move made meanwhile.
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
