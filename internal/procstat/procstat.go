// Package procstat reads the little the shim needs of a process's
// /proc/<pid>/stat: its state and its kernel flags, to tell a child that is
// exiting or has exited before the reaper reports it, its parent, its
// session, and its start time, which tells it from a later process with its
// number.
package procstat

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// pfExiting is the kernel's PF_EXITING: set as a process starts to exit,
// before its files are closed.
const pfExiting = 0x4

// Stat is a process's state letter, parent, session, flags and start time.
type Stat struct {
	State   byte
	Ppid    int
	Session int // the session leader's PID (in the reader's pid namespace)
	Flags   uint64
	Start   uint64 // clock ticks after boot; with the PID, the process's identity
}

// Exiting reports a process that has begun to exit, or is a zombie.
func (s Stat) Exiting() bool {
	return s.State == 'Z' || s.State == 'X' || s.Flags&pfExiting != 0
}

// Read reads pid's stat. Once the process is gone (reaped) the
// error wraps os.ErrNotExist.
func Read(pid int) (Stat, error) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return Stat{}, err
	}
	// pid (comm) state ppid pgrp session tty_nr tpgid flags ..., starttime
	// the 22nd (proc(5)); comm may hold spaces and parentheses, so fields
	// count from the last ')'.
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return Stat{}, fmt.Errorf("/proc/%d/stat: no command name", pid)
	}
	fields := strings.Fields(string(data[i+1:]))
	if len(fields) < 20 || len(fields[0]) != 1 {
		return Stat{}, fmt.Errorf("/proc/%d/stat: too few fields", pid)
	}
	ppid, err := strconv.Atoi(fields[1])
	if err != nil {
		return Stat{}, fmt.Errorf("/proc/%d/stat: ppid: %w", pid, err)
	}
	session, err := strconv.Atoi(fields[3])
	if err != nil {
		return Stat{}, fmt.Errorf("/proc/%d/stat: session: %w", pid, err)
	}
	flags, err := strconv.ParseUint(fields[6], 10, 64)
	if err != nil {
		return Stat{}, fmt.Errorf("/proc/%d/stat: flags: %w", pid, err)
	}
	start, err := strconv.ParseUint(fields[19], 10, 64)
	if err != nil {
		return Stat{}, fmt.Errorf("/proc/%d/stat: start time: %w", pid, err)
	}
	return Stat{State: fields[0][0], Ppid: ppid, Session: session, Flags: flags, Start: start}, nil
}
