package harness

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Files the harness keeps in a daemon's directory for SweepStale.
const (
	pidFileName   = "containerd.pid" // the daemon's PID
	ownerFileName = "owner.pid"      // the PID of the test process that made the directory
	nsFileName    = "namespaces"     // namespaces used on it, one a line
)

var sweepOnce sync.Once

// SweepStale cleans up after harness runs that could not clean up themselves (a test
// binary killed by `go test -timeout`, or by a signal): for every directory under BaseDir
// whose containerd is no longer running, it kills the shims started by that containerd
// (found by its socket address), force-deletes the runc containers of the namespaces it
// recorded, unmounts everything under the directory and removes it. Directories of live
// daemons, e.g. of a concurrent test run, are left alone. NewDaemon calls it once per
// process; what it did is written to w.
func SweepStale(w io.Writer) {
	entries, err := os.ReadDir(BaseDir)
	if err != nil {
		return
	}
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		dir := filepath.Join(BaseDir, e.Name())
		if !isStale(dir) {
			continue
		}
		d := &Daemon{Base: dir, Address: filepath.Join(dir, "c.sock")}
		procs := d.ShimProcesses("", "")
		for _, p := range procs {
			_ = syscall.Kill(p.Pid, syscall.SIGKILL)
		}
		waitGone(procs, 5*time.Second)
		d.removeShimSockets(procs)
		data, _ := os.ReadFile(filepath.Join(dir, nsFileName))
		for _, ns := range strings.Fields(string(data)) {
			_ = d.forceDeleteRunc(ns)
		}
		err := UnmountUnder(dir)
		if err == nil {
			err = os.RemoveAll(dir)
		}
		fmt.Fprintf(w, "harness: swept stale daemon dir %s (%d shims killed, err %v)\n", dir, len(procs), err)
	}
}

// isStale reports whether dir belongs to a daemon that is gone: the test process that made
// it is gone (or is this one), and its recorded PID is not a containerd running with this
// dir's config, or (no PID recorded) it is older than a startup could take.
func isStale(dir string) bool {
	if data, err := os.ReadFile(filepath.Join(dir, ownerFileName)); err == nil {
		if owner, err := strconv.Atoi(strings.TrimSpace(string(data))); err == nil && owner != os.Getpid() && procAlive(owner) {
			return false // a live run's, whatever its containerd is doing
		}
	}
	data, err := os.ReadFile(filepath.Join(dir, pidFileName))
	if err != nil {
		st, err := os.Stat(dir)
		return err == nil && time.Since(st.ModTime()) > 2*DaemonStartTimeout
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil {
		return true
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil || !procAlive(pid) {
		return true
	}
	return !strings.Contains(string(cmdline), filepath.Join(dir, "config.toml"))
}
