package reaper

import (
	"fmt"
	"os/exec"
	"runtime"
)

// Start starts cmd and returns the channel its exit arrives on. The caller must
// not call cmd.Wait (the reaper owns the wait) and must give cmd *os.File
// stdio or none, so os/exec starts no copy goroutines that only Wait would end.
//
// When cmd.SysProcAttr.Pdeathsig is set, the OS thread is locked around the
// fork, so the fork happens on the thread the goroutine is on. The kernel
// ties the parent-death signal to the forking thread, not the process: the
// child is killed when that thread ends. Go's scheduler never ends a thread
// on its own, only with a goroutine that exits locked to it. Such a child is
// tethered until it is reaped, and the daemon ends idle threads only while
// no child is (WhileUntethered, at the idle trim); elsewhere the shim keeps
// locked exits off threads that may have forked (process.mountFrom hands its
// thread back; a pod holder's forking thread ends only when it cannot return
// to the shim's namespaces).
func (r *Reaper) Start(cmd *exec.Cmd) (<-chan Exit, error) {
	w := r.Open()
	defer w.Close()
	tethered := cmd.SysProcAttr != nil && cmd.SysProcAttr.Pdeathsig != 0
	if tethered {
		r.tetherMu.RLock()
		defer r.tetherMu.RUnlock()
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", cmd.Path, err)
	}
	return w.claim(cmd.Process.Pid, tethered), nil
}
