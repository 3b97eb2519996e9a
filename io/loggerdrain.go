package io

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// loggerEnds are the shim's own read ends on a binary:// logger's pipes.
//
// Without them the logger is the only reader: a logger that exits (crashes,
// or is killed) while the process runs, or one that closed a pipe it does not
// want, leaves the process writing into a pipe nobody holds, and its next
// write kills it with SIGPIPE. containerd's own shim keeps the read ends open
// for as long as the process's IO lives. So does this shim, and it also
// reads what nobody else will (counting it as dropped): a pipe whose logger
// end was already closed at the ready signal, and both pipes once the logger
// has exited, so the process is neither killed nor blocked once the pipe is
// full. A logger that exited at its ready signal leaving children to read
// (it daemonized) is not competed with: its pipes are only held. Nor is a
// child left reading by a logger that exits later: the pipes are drained
// only once the logger's process group (children share it) is empty.
//
// The ends are opened anew through /proc/self/fd of the write ends after the
// ready check, which looks for pipes without readers and must not see these.
// They stay outside Go's poller (no wake-up for every chunk the logger reads)
// until they are drained.
//
// Locking: mu guards fds, draining, closed and watching.
type loggerEnds struct {
	mu       sync.Mutex
	fds      []int      // idle read ends (-1 once handed to a drain)
	draining []*os.File // read ends being drained
	closed   bool
	dropped  *atomic.Uint64
	// onExit: drain both pipes when the logger exits and nothing is left
	// in its process group (false for a logger that daemonized: its
	// children read on, and may have left the group).
	onExit bool
	// pgid is the logger's process group (its pid: it is started with
	// Setpgid); 0 when unknown.
	pgid int
	// watching: the logger has exited and its group still held processes;
	// watchGroup drains the pipes once it is empty.
	watching bool
}

// loggerGroupPoll is how often a logger's process group is looked at after
// the logger exited leaving processes in it: a child that ends late only
// leaves the process waiting on a full pipe meanwhile.
const loggerGroupPoll = 250 * time.Millisecond

// holdLoggerPipes opens the shim's read ends on the pipes written through
// ws, and drains at once those whose logger end is already closed. With
// daemonized, the logger exited at its ready signal and its children read:
// its exit is no reason to drain. pgid is the logger's process group.
// Should the ends not open, the logger is used all the same, as before the
// shim held them (its exit would then SIGPIPE the process).
func (p *Pipes) holdLoggerPipes(daemonized bool, pgid int, ws ...*os.File) {
	e := &loggerEnds{dropped: &p.dropped, onExit: !daemonized, pgid: pgid}
	gone := make([]bool, len(ws)) // asked before the shim's own ends exist
	for i, w := range ws {
		gone[i] = readerGone(w)
	}
	for _, w := range ws {
		fd, err := reopenForReading(w)
		if err != nil {
			e.close()
			slog.Warn("binary:// logger: cannot hold its pipes; the process depends on the logger reading them", "error", err)
			return
		}
		e.fds = append(e.fds, fd)
	}
	for i := range ws {
		if gone[i] {
			e.drain(i)
		}
	}
	p.loggerEnds.Store(e)
	select {
	case <-p.loggerExit: // exited meanwhile: its callback found no ends yet
		p.loggerExited()
	default:
	}
}

// loggerExited drains the logger's pipes once it has exited, and every
// process of its group with it (see loggerEnds).
func (p *Pipes) loggerExited() {
	if e := p.loggerEnds.Load(); e != nil && e.onExit {
		e.drainWhenGroupGone()
	}
}

// drainWhenGroupGone drains every pipe once the logger's process group is
// empty: at once if it is, else from watchGroup. Idempotent.
func (e *loggerEnds) drainWhenGroupGone() {
	if groupGone(e.pgid) {
		e.drainAll()
		return
	}
	e.mu.Lock()
	start := !e.watching && !e.closed
	e.watching = true
	e.mu.Unlock()
	if start {
		go e.watchGroup()
	}
}

// watchGroup drains every pipe once the logger's process group is empty,
// looking every loggerGroupPoll; it gives up when the ends are closed.
func (e *loggerEnds) watchGroup() {
	tick := time.NewTicker(loggerGroupPoll)
	defer tick.Stop()
	for range tick.C {
		e.mu.Lock()
		closed := e.closed
		e.mu.Unlock()
		if closed {
			return
		}
		if groupGone(e.pgid) {
			e.drainAll()
			return
		}
	}
}

// groupGone reports whether process group pgid has no process left (a
// zombie counts until it is reaped). An unknown group (0) counts as gone:
// the pipes are then drained at the logger's exit.
func groupGone(pgid int) bool {
	return pgid <= 0 || errors.Is(unix.Kill(-pgid, 0), unix.ESRCH)
}

// reopenForReading opens a new read end (non-blocking, close-on-exec) on the
// pipe whose write end is w.
func reopenForReading(w *os.File) (int, error) {
	rc, err := w.SyscallConn()
	if err != nil {
		return -1, err
	}
	fd := -1
	var oerr error
	if err := rc.Control(func(wfd uintptr) {
		fd, oerr = unix.Open(fmt.Sprintf("/proc/self/fd/%d", wfd), unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	}); err != nil {
		return -1, err
	}
	return fd, oerr
}

// drainAll reads every held pipe from now on (the logger has exited).
func (e *loggerEnds) drainAll() {
	if e == nil {
		return
	}
	for i := range e.fds {
		e.drain(i)
	}
}

// drain starts reading pipe i, discarding and counting, until its writers
// are gone or close.
func (e *loggerEnds) drain(i int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed || e.fds[i] < 0 {
		return
	}
	// Non-blocking: os.NewFile hands it to the poller.
	f := os.NewFile(uintptr(e.fds[i]), "logger-pipe")
	e.fds[i] = -1
	e.draining = append(e.draining, f)
	e.read(f)
}

// read reads f, discarding and counting, until its writers are gone or it
// is closed.
func (e *loggerEnds) read(f *os.File) {
	go func() {
		bp := copyBufs.Get().(*[]byte)
		defer copyBufs.Put(bp)
		for {
			n, err := f.Read(*bp)
			if n > 0 {
				e.dropped.Add(uint64(n))
			}
			if err != nil {
				return // end of file (the process is gone), or closed
			}
		}
	}()
}

// settled reports whether every pipe the ends are on has no writer left and
// nothing queued: the process, and whatever shared its output, is gone, and
// whoever reads the pipes has read it all. False with no ends to look at.
func (e *loggerEnds) settled() bool {
	if e == nil {
		return false
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return false
	}
	for _, fd := range e.fds {
		if fd >= 0 && !hungUpEmpty(fd) {
			return false
		}
	}
	for _, f := range e.draining {
		rc, err := f.SyscallConn()
		if err != nil {
			return false
		}
		empty := false
		if rc.Control(func(fd uintptr) { empty = hungUpEmpty(int(fd)) }) != nil || !empty {
			return false
		}
	}
	return true
}

// hungUpEmpty reports whether the pipe read through fd has lost its last
// writer and holds nothing (a poll that does not wait).
func hungUpEmpty(fd int) bool {
	fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	if n, err := unix.Poll(fds, 0); err != nil || n == 0 {
		return false
	}
	return fds[0].Revents&unix.POLLHUP != 0 && fds[0].Revents&unix.POLLIN == 0
}

// close closes every read end, drained or not. Idempotent.
func (e *loggerEnds) close() {
	if e == nil {
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return
	}
	e.closed = true
	for i, fd := range e.fds {
		if fd >= 0 {
			unix.Close(fd)
			e.fds[i] = -1
		}
	}
	for _, f := range e.draining {
		f.Close()
	}
}
