// Package cgroup reads a container's cgroup: where it is (v1 per controller,
// or the v2 unified tree), its resource statistics in containerd's metric
// types, and its OOM-kill counter, which it can also watch.
//
// It reads the kernel's files directly instead of linking a cgroup manager:
// the shim only observes cgroups (the OCI runtime creates and changes them),
// and a lean import graph keeps every shim process small.
package cgroup

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/containerd/errdefs"
)

// DefaultRoot is where cgroup filesystems are mounted.
const DefaultRoot = "/sys/fs/cgroup"

// Cgroup is one process's cgroup.
type Cgroup struct {
	V2 bool
	// dirs maps a v1 controller name to its directory; for v2 the key is "".
	dirs map[string]string
	// root is where the cgroup filesystems are mounted (DefaultRoot).
	root string
}

// Unified reports whether root is a cgroup v2 (unified) mount. A hybrid
// host, with v2 only under root/unified, counts as v1: that is where the
// runtime puts the resource controllers.
func Unified(root string) bool {
	_, err := os.Stat(filepath.Join(root, "cgroup.controllers"))
	return err == nil
}

// ForPid locates pid's cgroup under root.
func ForPid(root string, pid int) (*Cgroup, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("process %d: %w", pid, errdefs.ErrNotFound)
		}
		return nil, fmt.Errorf("read cgroup of %d: %w", pid, err)
	}
	return Parse(root, data, Unified(root))
}

// Parse reads /proc/<pid>/cgroup content ("id:controllers:path" lines).
func Parse(root string, procCgroup []byte, v2 bool) (*Cgroup, error) {
	cg := &Cgroup{V2: v2, dirs: make(map[string]string), root: root}
	sc := bufio.NewScanner(bytes.NewReader(procCgroup))
	for sc.Scan() {
		parts := strings.SplitN(sc.Text(), ":", 3)
		if len(parts) != 3 {
			continue
		}
		controllers, path := parts[1], parts[2]
		if v2 {
			if parts[0] == "0" && controllers == "" {
				cg.dirs[""] = filepath.Join(root, path)
			}
			continue
		}
		for _, c := range strings.Split(controllers, ",") {
			if c == "" || strings.HasPrefix(c, "name=") {
				continue
			}
			cg.dirs[c] = filepath.Join(root, c, path)
		}
	}
	if len(cg.dirs) == 0 {
		return nil, fmt.Errorf("no cgroup found: %w", errdefs.ErrNotFound)
	}
	return cg, nil
}

// Same reports whether c and o are one cgroup: the same directory in every
// hierarchy either names.
func (c *Cgroup) Same(o *Cgroup) bool {
	return c.V2 == o.V2 && c.root == o.root && maps.Equal(c.dirs, o.dirs)
}

// Dir returns the directory of a v1 controller (or, under v2, the one
// directory whatever the controller).
func (c *Cgroup) Dir(controller string) string { return c.dir(controller) }

// dir returns the directory of a v1 controller (or the v2 directory).
func (c *Cgroup) dir(controller string) string {
	if c.V2 {
		return c.dirs[""]
	}
	return c.dirs[controller]
}

// Exists reports whether the cgroup's memory (v1) or unified (v2) directory
// is still there; the runtime removes it when the container is deleted.
func (c *Cgroup) Exists() bool {
	d := c.dir("memory")
	if d == "" {
		return false
	}
	_, err := os.Stat(d)
	return err == nil
}

// statsControllersV1 are the v1 controllers statistics are read from
// (StatsV1).
var statsControllersV1 = []string{"pids", "cpuacct", "cpu", "memory", "blkio"}

// gone reports whether the cgroup's directories that statistics are read
// from exist no more (at least one was known). Under v1 only those count:
// with the systemd driver the scope goes with its last process in the
// hierarchies systemd manages, while the directories runc made itself in
// the others (freezer, cpuset, net_cls, perf_event, hugetlb) stay until
// the runtime's delete.
func (c *Cgroup) gone() bool {
	dirs := []string{c.dirs[""]}
	if !c.V2 {
		dirs = dirs[:0]
		for _, ctl := range statsControllersV1 {
			dirs = append(dirs, c.dirs[ctl])
		}
	}
	known := false
	for _, d := range dirs {
		if d == "" {
			continue
		}
		known = true
		if _, err := os.Stat(d); !errors.Is(err, os.ErrNotExist) {
			return false
		}
	}
	return known
}

// parseUint reads a counter or a limit; "max" (no limit) is the largest
// value. A negative number is 0, as containerd/cgroups reads it (some
// kernels print negative memory.stat counters; no limit file shows one).
func parseUint(s string) (uint64, error) {
	if s == "max" {
		return ^uint64(0), nil
	}
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		// ParseInt gives a negative number, or MinInt64 with ErrRange for
		// one below it.
		if i, ierr := strconv.ParseInt(s, 10, 64); i < 0 && (ierr == nil || errors.Is(ierr, strconv.ErrRange)) {
			return 0, nil
		}
		return 0, fmt.Errorf("parse %q: %w", s, err)
	}
	return v, nil
}

// OOMKills returns how many processes the kernel's OOM killer has killed in
// this cgroup: v1 memory.oom_control "oom_kill" (victims in this cgroup
// itself; one in a cgroup below it counts there, and that count goes away
// with its cgroup, so it is not summed in), v2 memory.events "oom_kill"
// (the whole subtree, unless cgroup2 is mounted with memory_localevents).
func (c *Cgroup) OOMKills() (uint64, error) {
	if c.V2 {
		return oomKillsIn(filepath.Join(c.dir(""), "memory.events"))
	}
	return oomKillsIn(filepath.Join(c.dir("memory"), "memory.oom_control"))
}

// ParentOOMKills is OOMKills of the v2 cgroup's parent, which counts the
// kills of its whole subtree: the one trace a kill leaves once the cgroup it
// happened in is gone. It fails on v1, and under the root (which keeps no
// memory.events).
func (c *Cgroup) ParentOOMKills() (uint64, error) {
	if !c.V2 {
		return 0, errors.New("v1 keeps no subtree count of OOM kills")
	}
	return oomKillsIn(filepath.Join(filepath.Dir(c.dir("")), "memory.events"))
}

// OOMKillsBelow sums the v1 oom_kill counts of the cgroups below this one
// (systemd or a nested runtime inside a container). v1 counts a victim in
// its own cgroup alone, so a kill below is in no count of this cgroup, and a
// cgroup removed since has taken its count away. A cgroup that goes during
// the walk is skipped. It fails on v2, whose memory.events counts a subtree's
// kills already.
func (c *Cgroup) OOMKillsBelow() (uint64, error) {
	if c.V2 {
		return 0, errors.New("v2 counts the kills below a cgroup in its own memory.events")
	}
	top := c.dir("memory")
	var sum uint64
	err := filepath.WalkDir(top, func(path string, d fs.DirEntry, err error) error {
		switch {
		case err != nil && path == top:
			return err
		case err != nil || !d.IsDir() || path == top:
			return nil // a cgroup that went while its entries were listed
		}
		n, err := oomKillsIn(filepath.Join(path, "memory.oom_control"))
		switch {
		case errors.Is(err, fs.ErrNotExist):
			return filepath.SkipDir
		case err != nil:
			return err
		}
		sum += n
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("OOM kills below %s: %w", top, err)
	}
	return sum, nil
}

// oomKillsIn reads the oom_kill line of a memory.oom_control or
// memory.events file.
func oomKillsIn(file string) (uint64, error) {
	kv, err := readKV(file)
	if err != nil {
		return 0, err
	}
	return oomKillOf(kv)
}

// oomKillOf is the "oom_kill" count of a memory.oom_control or
// memory.events read; ErrOOMKillsNotCounted where the kernel keeps none.
func oomKillOf(kv map[string]uint64) (uint64, error) {
	n, ok := kv["oom_kill"]
	if !ok {
		return 0, ErrOOMKillsNotCounted
	}
	return n, nil
}

// ErrOOMKillsNotCounted is OOMKills' answer when the kernel keeps no
// oom_kill count for the cgroup (v1 before Linux 4.13, v2 before 4.13 too).
var ErrOOMKillsNotCounted = errors.New("the kernel counts no OOM kills for this cgroup")

// AddProcess moves pid into the cgroup at path (e.g. "/system.slice/shims"),
// as runc-v2 does for its ShimCgroup option: under v2, path's cgroup.procs;
// under v1, cgroup.procs of path in every hierarchy where path exists (a
// hierarchy without it is skipped). It fails when path exists nowhere.
func AddProcess(root, path string, pid int) error {
	if pid <= 0 {
		// "0" in cgroup.procs is the writing process itself: the shim would
		// move into the container's cgroup.
		return fmt.Errorf("join cgroup %s: pid %d: %w", path, pid, errdefs.ErrInvalidArgument)
	}
	procs := []byte(strconv.Itoa(pid))
	if Unified(root) {
		if err := os.WriteFile(filepath.Join(root, path, "cgroup.procs"), procs, 0); err != nil {
			return fmt.Errorf("join cgroup %s: %w", path, err)
		}
		return nil
	}
	hierarchies, err := os.ReadDir(root)
	if err != nil {
		return fmt.Errorf("join cgroup %s: %w", path, err)
	}
	joined := 0
	for _, h := range hierarchies {
		// Hybrid hosts mount v2 at root/unified: the v1 hierarchies hold the
		// controllers, as for the containers.
		if !h.IsDir() || h.Name() == "unified" {
			continue
		}
		dir := filepath.Join(root, h.Name(), path)
		if _, err := os.Stat(filepath.Join(dir, "cgroup.procs")); err != nil {
			continue
		}
		if err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), procs, 0); err != nil {
			return fmt.Errorf("join cgroup %s (%s): %w", path, h.Name(), err)
		}
		joined++
	}
	if joined == 0 {
		return fmt.Errorf("join cgroup %s: it exists in no hierarchy under %s: %w", path, root, errdefs.ErrNotFound)
	}
	return nil
}

// State is a cgroup as handed to the next binary at an in-place upgrade. It
// is kept rather than found again from the init's pid, which is gone once
// the init has exited: a stopped container's cgroup stays until the runtime
// deletes it, and Stats still reads it.
type State struct {
	V2   bool              `json:"v2"`
	Dirs map[string]string `json:"dirs"`
}

// State describes c for a handover.
func (c *Cgroup) State() State {
	dirs := make(map[string]string, len(c.dirs))
	for k, v := range c.dirs {
		dirs[k] = v
	}
	return State{V2: c.V2, Dirs: dirs}
}

// FromState rebuilds a handed-over cgroup under root.
func FromState(root string, s State) (*Cgroup, error) {
	if len(s.Dirs) == 0 {
		return nil, fmt.Errorf("handed-over cgroup has no directory: %w", errdefs.ErrInvalidArgument)
	}
	cg := &Cgroup{V2: s.V2, dirs: make(map[string]string, len(s.Dirs)), root: root}
	for k, v := range s.Dirs {
		cg.dirs[k] = v
	}
	return cg, nil
}
