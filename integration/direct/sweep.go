package direct

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// A test binary killed by `go test -timeout` or a signal runs no t.Cleanup:
// its shims and containers would live on. Every scratch directory of the
// harness (os.TempDir()/exd-*) therefore names the test process that owns
// it, and each fake containerd's directory records the task it served, so
// the next run can clean up after a dead one.
const (
	ownerFile  = "owner"     // "<pid> <start time>" of the owning test process
	recordFile = "task.json" // taskRecord of the one task a fake containerd served
	// unownedGrace is how long a directory without an owner file is left
	// alone: it may belong to a run that is just creating it.
	unownedGrace = time.Minute
)

// scratchPattern matches the harness's scratch directories in os.TempDir().
const scratchPattern = "exd-*"

// taskRecord is what a later run needs to remove a dead run's task.
type taskRecord struct {
	Namespace  string `json:"namespace"`
	ID         string `json:"id"`
	Bundle     string `json:"bundle"`
	RuncRoot   string `json:"runcRoot"`
	CgroupPath string `json:"cgroupPath"`
}

// markOwned records this test process as the owner of dir.
func markOwned(dir string) error {
	id, err := processIdentity(os.Getpid())
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, ownerFile), []byte(id), 0o644)
}

// stale reports whether dir's owner is gone.
func stale(dir string) bool {
	b, err := os.ReadFile(filepath.Join(dir, ownerFile))
	if err != nil {
		st, err := os.Stat(dir)
		return err == nil && time.Since(st.ModTime()) > unownedGrace
	}
	pid, _, _ := strings.Cut(string(b), " ")
	n, err := strconv.Atoi(pid)
	if err != nil {
		return true
	}
	id, err := processIdentity(n)
	return err != nil || id != string(b)
}

// recordTask writes the task a fake containerd serves into its directory.
func recordTask(dir string, r taskRecord) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, recordFile), b, 0o644)
}

// sweepStale removes what dead runs left: their shims (found by the fake
// containerd address they were given), runc containers, mounts, cgroups,
// sockets, bundles and scratch directories. Problems are reported, not
// fatal: they concern earlier runs.
func sweepStale() {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), scratchPattern))
	for _, dir := range dirs {
		if st, err := os.Stat(dir); err != nil || !st.IsDir() || !stale(dir) {
			continue
		}
		if err := sweepDir(dir); err != nil {
			fmt.Fprintf(os.Stderr, "direct: sweeping %s left by a dead run: %v\n", dir, err)
		}
	}
}

func sweepDir(dir string) error {
	b, err := os.ReadFile(filepath.Join(dir, recordFile))
	if err == nil {
		var r taskRecord
		if err := json.Unmarshal(b, &r); err != nil {
			return err
		}
		killShimsOf(filepath.Join(dir, grpcSocketName))
		if r.ID != "" && r.RuncRoot != "" {
			if err := runcDelete(r.RuncRoot, r.ID); err != nil {
				fmt.Fprintf(os.Stderr, "direct: %v\n", err)
			}
			_ = os.Remove(r.RuncRoot) // only if no other container is left in it
		}
		if r.Bundle != "" {
			if err := unmountUnder(r.Bundle); err != nil {
				return err
			}
			_ = os.RemoveAll(r.Bundle)
		}
		if r.CgroupPath != "" {
			if err := removeCgroupEventually(r.CgroupPath); err != nil {
				fmt.Fprintf(os.Stderr, "direct: cgroup %s: %v\n", r.CgroupPath, err)
			}
			if parents, err := CgroupDirs(filepath.Dir(r.CgroupPath)); err == nil {
				for _, p := range parents {
					_ = os.Remove(p) // the test's parent, once its last container is gone
				}
			}
		}
	}
	return os.RemoveAll(dir)
}

// killShimsOf SIGKILLs the shim daemons given address as -address (only a
// fake containerd of this harness hands out that path), and removes their
// sockets.
func killShimsOf(address string) {
	for _, pid := range processesWithArg("-address", address) {
		fd, err := unix.PidfdOpen(pid, 0)
		if err != nil {
			continue
		}
		// Checked again through the pidfd's process: the PID is pinned now.
		socket := argAfter(pid, "-socket")
		if len(processesWithArgIn([]int{pid}, "-address", address)) == 1 {
			_ = unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0)
			fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
			_, _ = unix.Poll(fds, int(shimExitTimeout.Milliseconds()))
			if socket != "" {
				_ = os.Remove(socket)
			}
		}
		unix.Close(fd)
	}
}
