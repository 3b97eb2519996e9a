// Package proctree lists a container's processes from /proc, for a container
// that has no cgroup of its own to list them from (the runtime's `ps` reads
// the cgroup, and fails without one: rootless containers on cgroup v1, or on
// v2 without a delegated cgroup).
package proctree

import (
	"bytes"
	"fmt"
	"os"
	"slices"
	"strconv"

	"github.com/example/containerd-shim-example-v2/internal/procstat"
)

// Of lists the processes of the container whose init is init: every process
// in init's pid namespace when init is that namespace's pid 1 (a container
// with a pid namespace of its own, where orphans are reparented to its init);
// otherwise (the host's namespace, or a pod's that the container joined) init,
// the roots given (its execs) and all their descendants, which misses only a
// process whose parent died (reparented to the shim, the subreaper, or to the
// pod's init). Sorted; init first is not promised.
func Of(init int, roots ...int) ([]int, error) {
	initNS, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", init))
	if err != nil {
		return nil, fmt.Errorf("pid namespace of %d: %w", init, err)
	}
	ownsNS, err := firstInNamespace(init)
	if err != nil {
		return nil, err
	}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	var pids []int
	if ownsNS {
		for _, e := range entries {
			pid, err := strconv.Atoi(e.Name())
			if err != nil {
				continue
			}
			// A process gone meanwhile has no link: it is not listed.
			if ns, err := os.Readlink("/proc/" + e.Name() + "/ns/pid"); err == nil && ns == initNS {
				pids = append(pids, pid)
			}
		}
		slices.Sort(pids)
		return pids, nil
	}
	children := make(map[int][]int)
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if ppid, ok := parent(pid); ok {
			children[ppid] = append(children[ppid], pid)
		}
	}
	seen := make(map[int]bool)
	queue := append([]int{init}, roots...)
	for len(queue) > 0 {
		pid := queue[0]
		queue = queue[1:]
		if pid <= 0 || seen[pid] {
			continue
		}
		seen[pid] = true
		pids = append(pids, pid)
		queue = append(queue, children[pid]...)
	}
	slices.Sort(pids)
	return pids, nil
}

// firstInNamespace reports whether pid is pid 1 of its innermost pid
// namespace (the last number of its NSpid line), which makes the namespace its
// own; the host's init is pid 1 of the host's, which no container's init is.
func firstInNamespace(pid int) (bool, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return false, fmt.Errorf("status of %d: %w", pid, err)
	}
	for _, line := range bytes.Split(data, []byte("\n")) {
		if rest, ok := bytes.CutPrefix(line, []byte("NSpid:")); ok {
			f := bytes.Fields(rest)
			return len(f) > 1 && string(f[len(f)-1]) == "1", nil
		}
	}
	return false, fmt.Errorf("status of %d: no NSpid line", pid)
}

// parent is a process's parent, if it is still there.
func parent(pid int) (int, bool) {
	st, err := procstat.Read(pid)
	return st.Ppid, err == nil
}
