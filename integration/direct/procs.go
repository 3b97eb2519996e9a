package direct

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// What the harness reads from /proc: command lines, to find the daemons it
// started (they are not its children), and start times, to tell a process
// from a later one with the same PID.

// processIdentity is a PID with its start time (clock ticks after boot), so
// a reused PID is not mistaken for the process.
func processIdentity(pid int) (string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return "", err
	}
	// The command name (field 2) may hold spaces: fields count from the ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return "", fmt.Errorf("malformed /proc/%d/stat", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	const startTime = 19 // field 22 of stat, counted from field 3
	if len(f) <= startTime {
		return "", fmt.Errorf("malformed /proc/%d/stat", pid)
	}
	return strconv.Itoa(pid) + " " + f[startTime], nil
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

// processesWithArg lists the processes passing value after flag.
func processesWithArg(flag, value string) []int {
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
	return processesWithArgIn(pids, flag, value)
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
