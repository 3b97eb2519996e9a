package harness

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// ProcStat is the part of /proc/<pid>/stat the reliability tests look at.
type ProcStat struct {
	Pid   int
	PPid  int
	State byte // R, S, D, Z, T, ...
	Comm  string
}

func (p ProcStat) String() string {
	return fmt.Sprintf("pid %d (%s) state %c parent %d", p.Pid, p.Comm, p.State, p.PPid)
}

// ReadProcStat parses /proc/<pid>/stat.
func ReadProcStat(pid int) (ProcStat, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return ProcStat{}, err
	}
	// "pid (comm) state ppid ...": comm may hold spaces and parentheses; it ends at the
	// last ')'.
	s := string(data)
	open, end := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
	if open < 0 || end < open || end+2 >= len(s) {
		return ProcStat{}, fmt.Errorf("/proc/%d/stat: unexpected format %q", pid, s)
	}
	f := strings.Fields(s[end+2:])
	if len(f) < 2 {
		return ProcStat{}, fmt.Errorf("/proc/%d/stat: unexpected format %q", pid, s)
	}
	ppid, _ := strconv.Atoi(f[1])
	return ProcStat{Pid: pid, PPid: ppid, State: f[0][0], Comm: s[open+1 : end]}, nil
}

// AllProcStats lists every process of the host (processes that vanish while the list is
// read are skipped).
func AllProcStats() []ProcStat {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var out []ProcStat
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if st, err := ReadProcStat(pid); err == nil {
			out = append(out, st)
		}
	}
	return out
}

// ZombiesOf lists the zombie processes whose parent is one of parents.
func ZombiesOf(parents map[int]bool) []ProcStat {
	var out []ProcStat
	for _, p := range AllProcStats() {
		if p.State == 'Z' && parents[p.PPid] {
			out = append(out, p)
		}
	}
	return out
}

// ShimPidOf reads the shim daemon's PID from the task's bundle (<bundle>/shim.pid, written
// by the shim under test; the stock runc v2 shim writes none, see ShimProcesses instead).
func (d *Daemon) ShimPidOf(ns, id string) (int, error) {
	data, err := os.ReadFile(filepath.Join(d.BundleDir(ns, id), "shim.pid"))
	if err != nil {
		return 0, err
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil || pid <= 0 {
		return 0, fmt.Errorf("shim.pid of %s/%s: %q is not a pid", ns, id, data)
	}
	return pid, nil
}

// FIFODirsUnder lists the entries of dir (the per-process FIFO directories cio creates
// there); an absent dir lists nothing.
func FIFODirsUnder(dir string) []string {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	var out []string
	for _, e := range entries {
		out = append(out, filepath.Join(dir, e.Name()))
	}
	return out
}
