package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/example/containerd-shim-example-v2/integration/harness"
)

// cgroupRoot is where cgroup filesystems are mounted: one hierarchy per v1 controller
// (/sys/fs/cgroup/memory, ...), or the v2 unified tree itself.
const cgroupRoot = "/sys/fs/cgroup"

// cgroupV2 reports whether the host's resource controllers are on cgroup v2 (see
// harness.UnifiedCgroups).
func cgroupV2() bool { return harness.UnifiedCgroups() }

// cgroupFS is one process's cgroup as the tests read it: the v1 directory of each controller,
// or the one v2 directory. Its methods take a v1 and a v2 spelling of the same knob and read
// the one the host has, so every resource test runs on both (the cgroup v2 lane, make
// test-cgroup2, runs them in a v2 guest).
type cgroupFS struct {
	v2   bool
	dirs map[string]string // controller -> directory; "" -> the v2 directory
}

// cgroupOf reads /proc/<pid>/cgroup.
func cgroupOf(t *testing.T, pid uint32) cgroupFS {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		t.Fatalf("read cgroups of pid %d: %v", pid, err)
	}
	cg := cgroupFS{v2: cgroupV2(), dirs: map[string]string{}}
	for _, line := range strings.Split(string(data), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		if cg.v2 {
			if parts[0] == "0" {
				cg.dirs[""] = filepath.Join(cgroupRoot, parts[2])
			}
			continue
		}
		for _, c := range strings.Split(parts[1], ",") {
			cg.dirs[c] = filepath.Join(cgroupRoot, parts[1], parts[2])
		}
	}
	if cg.dir("memory") == "" || cg.dir("memory") == cgroupRoot || cg.dir("memory") == filepath.Join(cgroupRoot, "memory") {
		t.Fatalf("pid %d is in no container cgroup:\n%s", pid, data)
	}
	return cg
}

// dir is the directory holding a controller's files.
func (c cgroupFS) dir(controller string) string {
	if c.v2 {
		return c.dirs[""]
	}
	return c.dirs[controller]
}

// read returns the trimmed content of the controller's file: v1name on v1, v2name on v2.
func (c cgroupFS) read(t *testing.T, controller, v1name, v2name string) string {
	t.Helper()
	name := v1name
	if c.v2 {
		name = v2name
	}
	data, err := os.ReadFile(filepath.Join(c.dir(controller), name))
	if err != nil {
		t.Fatalf("read %s: %v", name, err)
	}
	return strings.TrimSpace(string(data))
}

// readInt is read for a file holding one number.
func (c cgroupFS) readInt(t *testing.T, controller, v1name, v2name string) int64 {
	t.Helper()
	s := c.read(t, controller, v1name, v2name)
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		t.Fatalf("%s/%s: %v", c.dir(controller), v1name, err)
	}
	return v
}

// memoryLimit is the cgroup's memory limit (v1 memory.limit_in_bytes, v2 memory.max;
// -1 for none).
func (c cgroupFS) memoryLimit(t *testing.T) int64 {
	t.Helper()
	s := c.read(t, "memory", "memory.limit_in_bytes", "memory.max")
	if s == "max" {
		return -1
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		t.Fatalf("memory limit %q: %v", s, err)
	}
	return v
}

// newParentCgroup makes a cgroup at path (e.g. "/ex-oomp-1234", the way kubelet makes a pod's)
// limited to limit bytes of memory (limitedCgroup), and removes it when the test ends
// (register it before anything placed under it, so it is removed after them).
func newParentCgroup(t *testing.T, path string, limit int64) {
	t.Helper()
	limitedCgroup(t, path, limit)
	t.Cleanup(func() {
		if err := harness.RemoveCgroup(path); err != nil {
			t.Errorf("remove parent cgroup %s: %v", path, err)
		}
	})
}

// limitedCgroup makes a cgroup at path for the memory controller (v1) or in the v2 tree with
// memory and pids handed down to its children, limited to limit bytes of memory.
func limitedCgroup(t *testing.T, path string, limit int64) {
	t.Helper()
	dir := filepath.Join(cgroupRoot, "memory", path)
	file, value := "memory.limit_in_bytes", strconv.FormatInt(limit, 10)
	if cgroupV2() {
		dir = filepath.Join(cgroupRoot, path)
		file = "memory.max"
	}
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if cgroupV2() {
		// Children get the memory controller only when their parent hands it down.
		if err := os.WriteFile(filepath.Join(dir, "cgroup.subtree_control"), []byte("+memory +pids"), 0o644); err != nil {
			t.Fatalf("enable memory for %s's children: %v", path, err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, file), []byte(value), 0o644); err != nil {
		t.Fatal(err)
	}
}
