// Package oomscore reads and sets a process's oom_score_adj, the weight the
// kernel's OOM killer gives it (-1000, never, to 1000): the shim's daemon
// places itself just above containerd, and a pod's holder where CRI puts a
// pause container.
package oomscore

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// Of is process pid's oom_score_adj.
func Of(pid int) (int, error) {
	data, err := os.ReadFile(file(pid))
	if err != nil {
		return 0, err
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil {
		return 0, fmt.Errorf("%s: %w", file(pid), err)
	}
	return n, nil
}

// Set gives process pid the oom_score_adj score, clamped to the kernel's
// range. Lowering one needs CAP_SYS_RESOURCE: without it the error is a
// permission error (EACCES).
func Set(pid, score int) error {
	return os.WriteFile(file(pid), []byte(strconv.Itoa(min(max(score, -1000), 1000))), 0)
}

func file(pid int) string { return fmt.Sprintf("/proc/%d/oom_score_adj", pid) }
