package direct

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// What the harness reads from /proc: command lines, to find the daemons it
// started (they are not its children), and start times, to tell a process
// from a later one with the same PID.

// processIdentity is a PID with its start time (clock ticks after boot), so
// a reused PID is not mistaken for the process.
func processIdentity(pid int) (string, error) {
	f, err := statFields(pid)
	if err != nil {
		return "", err
	}
	return strconv.Itoa(pid) + " " + f[statStartTime], nil
}

// statStartTime is field 22 of /proc/<pid>/stat, counted as statFields does.
const statStartTime = 19

// statFields returns /proc/<pid>/stat's fields from the third on (state,
// ppid, ...): the command name (field 2) may hold spaces, so they are
// counted from its closing ')'.
func statFields(pid int) ([]string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return nil, err
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return nil, fmt.Errorf("malformed /proc/%d/stat", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) <= statStartTime {
		return nil, fmt.Errorf("malformed /proc/%d/stat", pid)
	}
	return f, nil
}

// parentPid returns a process's parent (field 4 of /proc/<pid>/stat).
func parentPid(pid int) (int, error) {
	f, err := statFields(pid)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(f[1])
}

// processArgs returns a process's command line.
func processArgs(pid int) []string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil || len(b) == 0 {
		return nil
	}
	return strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
}

// argAfter returns the word after flag in a process's command line.
func argAfter(pid int, flag string) string {
	args := processArgs(pid)
	for i := 0; i+1 < len(args); i++ {
		if args[i] == flag {
			return args[i+1]
		}
	}
	return ""
}

// processesWithArg lists the processes passing value after flag, leaving
// out any whose parent is listed too: a child the daemon has forked but not
// yet exec'd shares its memory, so its command line reads as the daemon's.
// The daemon forks one at its start (Go's first os.FindProcess checks
// clone(CLONE_PIDFD) with a throwaway child) and one per runtime call; CI
// once found the first beside its daemon.
func processesWithArg(flag, value string) []int {
	return leaveOutChildren(processesWithArgIn(allProcesses(), flag, value), parentPid)
}

// leaveOutChildren keeps the processes of found whose parent (as parent
// reads it) is not in found. One whose parent cannot be read any more has
// gone since its command line was read (the throwaway child exits at once
// and is reaped): it is left out too, as it serves nothing.
func leaveOutChildren(found []int, parent func(pid int) (int, error)) []int {
	if len(found) < 2 {
		return found
	}
	listed := make(map[int]bool, len(found))
	for _, pid := range found {
		listed[pid] = true
	}
	var parents []int
	for _, pid := range found {
		if ppid, err := parent(pid); err == nil && !listed[ppid] {
			parents = append(parents, pid)
		}
	}
	return parents
}

func processesWithArgIn(pids []int, flag, value string) []int {
	var found []int
	for _, pid := range pids {
		if argAfter(pid, flag) == value {
			found = append(found, pid)
		}
	}
	return found
}

// allProcesses lists the PIDs in /proc (none if it cannot be read).
func allProcesses() []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var pids []int
	for _, e := range entries {
		if pid, err := strconv.Atoi(e.Name()); err == nil {
			pids = append(pids, pid)
		}
	}
	return pids
}

// InheritableFDs lists pid's descriptors past stdio that a child it forks
// and execs would inherit (no O_CLOEXEC), each with what it is.
func InheritableFDs(pid int) ([]string, error) {
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range entries {
		fd, err := strconv.Atoi(e.Name())
		if err != nil || fd < 3 {
			continue
		}
		info, err := os.ReadFile(fmt.Sprintf("/proc/%d/fdinfo/%d", pid, fd))
		if err != nil {
			continue // closed meanwhile
		}
		for _, line := range strings.Split(string(info), "\n") {
			if v, ok := strings.CutPrefix(line, "flags:"); ok {
				if flags, err := strconv.ParseUint(strings.TrimSpace(v), 8, 64); err == nil && flags&0o2000000 == 0 { // O_CLOEXEC
					target, _ := os.Readlink(fmt.Sprintf("%s/%d", dir, fd))
					out = append(out, fmt.Sprintf("%d (%s)", fd, target))
				}
			}
		}
	}
	return out, nil
}

// SignalIgnored reports whether pid ignores sig (SigIgn in its status): a
// disposition its children inherit across execve.
func SignalIgnored(pid int, sig syscall.Signal) (bool, error) {
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return false, err
	}
	for _, line := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(line, "SigIgn:"); ok {
			mask, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			if err != nil {
				return false, fmt.Errorf("SigIgn of %d: %w", pid, err)
			}
			return mask&(1<<(uint(sig)-1)) != 0, nil
		}
	}
	return false, fmt.Errorf("no SigIgn in the status of %d", pid)
}
