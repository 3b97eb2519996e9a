package io

import (
	"cmp"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// LoggerEndsState is the shim's own read ends on a binary:// logger's pipes
// (loggerdrain.go) as handed over (layout 6 on): descriptor numbers in the
// successor. Without them, the successor left the process's pipes to the
// logger alone again, and a process whose logger had exited or closed a
// pipe before the switch died of SIGPIPE at its next write after it.
type LoggerEndsState struct {
	// Held are the ends held idle (the logger reads the pipe);
	// Draining, the ends being read and discarded (a pipe the logger
	// closed, or every pipe once it exited).
	Held     []int `json:"held,omitempty"`
	Draining []int `json:"draining,omitempty"`
	// OnExit: drain every pipe once the logger exits (false for a logger
	// that daemonized; see loggerEnds.onExit).
	OnExit bool `json:"onExit,omitempty"`
	// Group is the process group of a logger that has exited leaving
	// processes in it, a child reading on (layout 11): the successor drains
	// the held ends once it is empty. Before, the exit drained them at once,
	// in competition with the child.
	Group int `json:"group,omitempty"`
}

// export keeps duplicates of e's ends; nil for no ends.
func (e *loggerEnds) export(fds FDKeeper) (*LoggerEndsState, error) {
	if e == nil {
		return nil, nil
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return nil, nil
	}
	st := &LoggerEndsState{OnExit: e.onExit}
	for _, fd := range e.fds {
		if fd < 0 {
			continue // drained: among e.draining
		}
		n, err := fds.KeepRaw(fd, "logger pipe")
		if err != nil {
			return nil, err
		}
		st.Held = append(st.Held, n)
	}
	for _, f := range e.draining {
		n, err := fds.KeepDup(f)
		if err != nil {
			return nil, err
		}
		st.Draining = append(st.Draining, n)
	}
	if e.watching && len(st.Held) > 0 {
		st.Group = e.pgid
	}
	return st, nil
}

// importLoggerEnds rebuilds handed-over ends and goes on draining those
// that were, and watching an exited logger's group. Call it before the
// logger's exit can be reported (adoptLogger): that exit drains every end.
// loggerPid is the running logger's, 0 for none.
func (p *Pipes) importLoggerEnds(st *LoggerEndsState, loggerPid int, adopt func(fd int, name string, pollable bool) (*os.File, error)) error {
	e := &loggerEnds{dropped: &p.dropped, onExit: st.OnExit, pgid: cmp.Or(st.Group, loggerPid)}
	for _, n := range st.Held {
		// Adopted as a file the shim only holds, then kept as a bare
		// non-blocking descriptor out of the poller, as holdLoggerPipes
		// opens it (drain makes the poller's file).
		f, err := adopt(n, "logger pipe", held)
		if err == nil {
			var fd int
			if fd, err = bareEnd(f); err == nil {
				e.fds = append(e.fds, fd)
			}
		}
		if err != nil {
			e.close()
			return fmt.Errorf("binary:// logger pipe: %w", err)
		}
	}
	for _, n := range st.Draining {
		f, err := adopt(n, "logger pipe", polled)
		if err != nil {
			e.close()
			return fmt.Errorf("binary:// logger pipe: %w", err)
		}
		e.draining = append(e.draining, f)
	}
	for _, f := range e.draining {
		e.read(f)
	}
	p.loggerEnds.Store(e)
	if st.Group > 0 {
		e.drainWhenGroupGone()
	}
	return nil
}

// bareEnd turns an adopted file into a bare non-blocking descriptor of its
// own (close-on-exec), closing the file.
func bareEnd(f *os.File) (int, error) {
	defer f.Close()
	fd, err := dupFD(f)
	if err != nil {
		return -1, fmt.Errorf("duplicate a logger pipe's read end: %w", err)
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}
