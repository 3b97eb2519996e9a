// Package oomlog finds the OOM killer's victims in the kernel's log
// (/dev/kmsg): the record of a kill is stored before the victim is sent its
// SIGKILL, and it names the victim's PID (and, when the kernel's rate limit
// lets the summary line through, its cgroup and the cgroup whose limit was
// met). It outlives the victim's cgroup, which a cgroup's own kill count does
// not when systemd removes an emptied scope at once. kubelet's cadvisor
// learns of OOM kills from the same log.
//
// The log is read only when asked (Mark, Victim), never watched: every
// message the kernel logs would otherwise wake every shim on the node.
package oomlog

import (
	"cmp"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"

	"golang.org/x/sys/unix"
)

// Victim is a process the OOM killer logged killing.
type Victim struct {
	Seq uint64 `json:"seq"` // the sequence number of its first record (the summary's, if any)
	Pid int    `json:"pid"` // in the kernel's initial PID namespace
	// OOMMemcg and TaskMemcg are from the summary line ("oom-kill:"): the
	// cgroup whose limit was met ("" for the node's memory) and the
	// victim's, paths from the root of the cgroup hierarchy as the kernel
	// sees it. Both "" when the summary was rate-limited away (the kernel
	// prints at most 10 per 5 s) or the kernel predates it (4.19).
	OOMMemcg  string `json:"oomMemcg,omitempty"`
	TaskMemcg string `json:"taskMemcg,omitempty"`
}

// maxVictims bounds the victims kept (the oldest go first): a container's
// is looked for within milliseconds of its kill, and the node's other
// kills meanwhile are few. At most a few KiB.
const maxVictims = 64

// summaryReach is how many records before its kill's "Killed process" line
// the summary line is taken for the same kill's.
const summaryReach = 64

// recordMax is the longest record /dev/kmsg returns (the kernel's
// CONSOLE_EXT_LOG_MAX); a read into less fails with EINVAL.
const recordMax = 8192

// Log reads the kernel's log for OOM victims. The zero value reads
// /dev/kmsg, opened at its end by the first Mark: victims logged before it
// are never seen.
//
// Locking: mu guards everything below it; reads of the log are made under it.
type Log struct {
	// open returns the log's descriptor, non-blocking, positioned where
	// reading starts; nil: /dev/kmsg at its end. Tests give a
	// SOCK_SEQPACKET socket, which returns a record per read as the log does.
	open func() (int, error)

	mu      sync.Mutex
	fd      int // valid once opened (and openErr nil)
	opened  bool
	openErr error
	seq     uint64 // the last record read
	victims map[int]Victim
}

// NewReading returns a Log that reads the descriptor open returns instead
// of /dev/kmsg (tests).
func NewReading(open func() (int, error)) *Log { return &Log{open: open} }

// Mark reads the log up to its end (opening it the first time) and returns
// the last record's sequence number: victims logged after it are found by
// Victim(mark, ...). A container's is taken before its init exists, so that a
// victim with its PID found later is it, not an earlier holder of the number.
func (l *Log) Mark() (uint64, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.drain(); err != nil {
		return 0, err
	}
	return l.seq, nil
}

// Victim reads the log and returns the last victim logged after mark that
// is(v) accepts, if any: one with a given PID, or one in a given cgroup
// (whose PIDs the caller may not see, from a PID namespace of its own).
func (l *Log) Victim(mark uint64, is func(Victim) bool) (Victim, bool, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.drain(); err != nil {
		return Victim{}, false, err
	}
	var found Victim
	for _, v := range l.victims {
		if v.Seq > mark && v.Seq > found.Seq && is(v) {
			found = v
		}
	}
	return found, found.Seq > mark, nil
}

// Close closes the log. Mark and Victim fail after it.
func (l *Log) Close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.opened && l.openErr == nil {
		_ = unix.Close(l.fd)
	}
	l.opened, l.openErr = true, errors.New("oomlog: closed")
}

// State is an open Log as handed to the next binary of an in-place upgrade
// (docs/upgrade.md): its descriptor, the last record read and the victims
// read. The descriptor goes over, and reads on from the last record read:
// the records logged during the switch are read. A log opened anew starts
// at its end, after them. Opened at the oldest record the kernel holds, it
// would read the whole buffer at each upgrade, and a container's mark of 0
// (taken before its predecessor, opened at the end, had read any record)
// would take every victim in the buffer for one logged after the mark.
type State struct {
	FD      int      `json:"fd"`
	Seq     uint64   `json:"seq"`
	Victims []Victim `json:"victims,omitempty"`
}

// Export describes an open log for the next binary, keep keeping its
// descriptor across execve (and saying its number there); nil for a log
// never opened, or that could not be: the next binary opens it itself.
// Nothing may read l after it: a read would take its records from the
// descriptor handed over too.
func (l *Log) Export(keep func(fd int, name string) (int, error)) (*State, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.opened || l.openErr != nil {
		return nil, nil
	}
	fd, err := keep(l.fd, "kernel log")
	if err != nil {
		return nil, err
	}
	bySeq := func(a, b Victim) int { return cmp.Compare(a.Seq, b.Seq) }
	return &State{FD: fd, Seq: l.seq, Victims: slices.SortedFunc(maps.Values(l.victims), bySeq)}, nil
}

// Import takes over a log a predecessor exported, before l is first read.
func (l *Log) Import(st State) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.opened {
		return errors.New("oomlog: import into a log already opened")
	}
	// A bare descriptor, as the log keeps it: close-on-exec again.
	if _, err := unix.FcntlInt(uintptr(st.FD), unix.F_SETFD, unix.FD_CLOEXEC); err != nil {
		return fmt.Errorf("oomlog: adopt the kernel log's descriptor %d: %w", st.FD, err)
	}
	l.fd, l.opened, l.seq = st.FD, true, st.Seq
	for _, v := range st.Victims {
		l.add(v)
	}
	return nil
}

// drain reads every record not read yet; l.mu is held.
func (l *Log) drain() error {
	if !l.opened {
		l.opened = true
		open := l.open
		if open == nil {
			open = openKmsg
		}
		l.fd, l.openErr = open()
	}
	if l.openErr != nil {
		return l.openErr
	}
	buf := make([]byte, recordMax)
	for {
		n, err := unix.Read(l.fd, buf)
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EPIPE:
			// Records were overwritten before they were read: the next
			// read returns the oldest one left.
			continue
		case err == unix.EAGAIN:
			return nil
		case err != nil:
			return fmt.Errorf("read the kernel log: %w", err)
		case n <= 0:
			return nil
		}
		l.take(buf[:n])
	}
}

// take records what one log record says of an OOM kill; l.mu is held.
func (l *Log) take(rec []byte) {
	seq, msg, ok := parseRecord(rec)
	if !ok {
		return
	}
	l.seq = seq
	if pid, oomMemcg, taskMemcg, ok := parseSummary(msg); ok {
		l.add(Victim{Seq: seq, Pid: pid, OOMMemcg: oomMemcg, TaskMemcg: taskMemcg})
	} else if pid, ok := parseKilled(msg); ok {
		// The kill's summary, when the rate limit let it through, came a
		// few records before (the kernel's backtrace and memory report can
		// come between): keep its paths. An older one is an earlier holder
		// of the PID's.
		if v, seen := l.victims[pid]; !seen || v.TaskMemcg == "" || seq-v.Seq > summaryReach {
			l.add(Victim{Seq: seq, Pid: pid})
		}
	}
}

// add keeps v, dropping the oldest victim beyond maxVictims; l.mu is held.
func (l *Log) add(v Victim) {
	if l.victims == nil {
		l.victims = make(map[int]Victim)
	}
	l.victims[v.Pid] = v
	if len(l.victims) <= maxVictims {
		return
	}
	oldest := v
	for _, o := range l.victims {
		if o.Seq < oldest.Seq {
			oldest = o
		}
	}
	delete(l.victims, oldest.Pid)
}

// openKmsg opens /dev/kmsg for reading at its end (non-blocking): every read
// returns one record, EAGAIN when there is none left.
func openKmsg() (int, error) {
	fd, err := unix.Open("/dev/kmsg", unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("open the kernel log: %w", err)
	}
	if _, err := unix.Seek(fd, 0, unix.SEEK_END); err != nil {
		_ = unix.Close(fd)
		return -1, fmt.Errorf("seek to the kernel log's end: %w", err)
	}
	return fd, nil
}
