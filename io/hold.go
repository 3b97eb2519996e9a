package io

import (
	"os"
	"sync"

	"golang.org/x/sys/unix"
)

// outputHold keeps the output relays of a process from reading its pipes
// until the runtime has launched it (Env.HoldOutput).
//
// Why: the runtime runs with the process's stdio as its own, so when it
// fails (runc's "exec: \"nosuch\": executable file not found in $PATH"), its
// error lands in the process's stderr pipe. The caller reports that error
// already; relayed, it would also show in `docker logs` and the CRI log of a
// container that never ran. The stock shim starts copying only once the
// runtime succeeded and drops the pipes otherwise; so does this.
//
// The pipes keep what is written meanwhile (the runtime's warnings, an exec
// that writes before `runc exec` returns), so nothing of a launched process
// is lost: its relays read it all once released.
//
// Locking: once guards the one decision; dropped is written before open is
// closed and read only after, so the channel orders it.
type outputHold struct {
	open    chan struct{} // closed when the relays may run (or must drop)
	once    sync.Once
	dropped bool // the launch failed: relays drop what the pipes hold
}

func newOutputHold() *outputHold { return &outputHold{open: make(chan struct{})} }

// release lets the relays run; drop tells them the launch failed.
func (h *outputHold) release(drop bool) {
	h.once.Do(func() {
		h.dropped = drop
		close(h.open)
	})
}

// held reports whether the hold is still on.
func (h *outputHold) held() bool {
	select {
	case <-h.open:
		return false
	default:
		return true
	}
}

// wait blocks until the hold is released and reports whether the relays
// must drop their stream instead of relaying it.
func (h *outputHold) wait() (drop bool) {
	<-h.open
	return h.dropped
}

// Launched releases held output: the runtime has started the process, so
// what its pipes hold is the process's own. It does nothing for Pipes
// opened without Env.HoldOutput, and after Close.
func (p *Pipes) Launched() {
	if p.hold != nil {
		p.hold.release(false)
	}
}

// waitForLaunch is the first step of a relay: false when the launch
// failed, and the relay must end without reading its pipe.
func (p *Pipes) waitForLaunch() bool {
	if p.hold == nil {
		return true
	}
	return !p.hold.wait()
}

// DiscardHeld empties the process's pipes of what was written while the
// output is held, and keeps the hold on. It is for a launch that failed and
// may be tried again with the same pipes (a restore: the task stays Created
// and Start may be called once more): without it the failed attempt's
// runtime error would wait in the stderr pipe and be relayed with the output
// of the attempt that succeeds. It does nothing once the hold is released,
// or without one.
//
// Only the runtime wrote to the pipes, and it has exited; the relays wait
// for the hold, so nobody else reads them.
func (p *Pipes) DiscardHeld() {
	if p.hold == nil || !p.hold.held() {
		return
	}
	for _, f := range p.ownQueues {
		discardQueued(f)
	}
}

// discardQueued reads what the pipe holds, no more: the shim keeps the
// runtime's write end open, so the pipe never reports end of file here, and
// reading only what FIONREAD counts cannot wait even on a blocking pipe.
func discardQueued(f *os.File) {
	rc, err := f.SyscallConn()
	if err != nil {
		return
	}
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	for left := fifoQueued(rc); left > 0; {
		buf := (*bp)[:min(left, len(*bp))]
		n := 0
		_ = rc.Read(func(fd uintptr) bool {
			n, _ = unix.Read(int(fd), buf)
			return true // never wait for readiness: the bytes are counted
		})
		if n <= 0 {
			return
		}
		left -= n
	}
}
