package cgroup

import (
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"github.com/example/containerd-shim-example-v2/internal/rawfile"
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
// next container comes after the window.) And a request often comes some
// milliseconds before the runtime's migration: a Create, before the
// runtime's create has started up; an Exec, a round trip before the Start
// that runs the runtime's exec.
//
// How: Kick runs a migration that changes nothing but takes the lock: a
// pod's holder moved into the cgroup it is in, or at the daemon's start one
// of its own threads (KickOwnThread). What moves must be something nobody
// else moves meanwhile, or the write could undo their move.
//
// The zero value is ready; a nil *MigrationWarmer is off. Kick never blocks
// its caller and runs at most one warming at a time; a failure (the process
// gone already) only loses the head start.
type MigrationWarmer struct {
	running atomic.Bool
	done    atomic.Uint64 // warmings that completed without error

	// KickOwnThread's file, found by its first warming.
	ownOnce sync.Once
	ownFile string
	ownErr  error
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

// Warmed counts the warmings that completed without error (0 when off).
func (w *MigrationWarmer) Warmed() uint64 {
	if w == nil {
		return 0
	}
	return w.done.Load()
}

// Running reports whether a warming is under way (false when off).
func (w *MigrationWarmer) Running() bool {
	return w != nil && w.running.Load()
}

// KickOwnThread is Kick with a migration of one of the daemon's own threads
// into the cgroup it is in: a migration that changes nothing, for a warming
// when the shim has no process of its own to move (a daemon just started, a
// Create or an Exec about to run the runtime). Only a process nobody moves
// meanwhile may do it: under v1 the thread could otherwise be put back where
// the rest of the process was moved from. The file it writes is found once:
// every thread of the daemon is in the same cgroups, since nothing moves one
// of them alone.
func (w *MigrationWarmer) KickOwnThread(root string) {
	if w == nil {
		return
	}
	w.Kick(func() error {
		w.ownOnce.Do(func() { w.ownFile, w.ownErr = ownThreadFile(root) })
		if w.ownErr != nil {
			return w.ownErr
		}
		return moveThreadInto(w.ownFile)
	})
}

// ownThreadFile is the file that moves a thread of this process into the
// cgroup it is in: v2's cgroup.threads, or v1's tasks of one hierarchy (the
// lock is shared by all of them).
func ownThreadFile(root string) (string, error) {
	data, err := os.ReadFile("/proc/thread-self/cgroup")
	if err != nil {
		return "", err
	}
	v2 := Unified(root)
	cg, err := Parse(root, data, v2)
	if err != nil {
		return "", err
	}
	if v2 {
		return filepath.Join(cg.Dir(""), "cgroup.threads"), nil
	}
	for _, c := range []string{"memory", "pids", "cpu"} {
		if dir := cg.Dir(c); dir != "" {
			return filepath.Join(dir, "tasks"), nil
		}
	}
	return "", errors.New("no memory, pids or cpu hierarchy for this thread")
}

// moveThreadInto writes the calling thread's id to file. A tid, not "0":
// a thread that moves itself by "0" does not take the lock.
func moveThreadInto(file string) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	return rawfile.Write(file, strconv.AppendInt(nil, int64(unix.Gettid()), 10), 0, 0)
}
