package holder

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/example/containerd-shim-example-v2/cgroup"
)

// A holder is born in its pod's cgroup instead of being moved there after
// the fork. Moving a process (a pid written to cgroup.procs) write-locks the
// kernel's cgroup_threadgroup_rwsem, and taking that lock waits for an RCU
// grace period unless another migration took it a moment before: about 11 ms
// on a 2-vCPU VM, most of what StartSandbox took. A child is born in the
// cgroups of the thread that forks it, and neither way below takes that lock:
//
//   - cgroup v2: clone3 with CLONE_INTO_CGROUP (Linux 5.7), through
//     SysProcAttr.UseCgroupFD; older kernels refuse the call and the holder
//     is moved after the fork after all (forked.moveToCgroup).
//   - cgroup v1: the forking thread, which already is a locked thread of its
//     own (Start), moves itself into the pod cgroup of each hierarchy a holder
//     joins (the value 0 written to "tasks": a thread moving itself is exempt
//     from that lock), forks, and goes home with the namespaces
//     (threadHome.restore). v1 lets each thread have its own cgroups.

// birthCgroup is how the holder of one fork is born in its cgroup.
type birthCgroup struct {
	dir *os.File // v2: the pod cgroup's directory, for CLONE_INTO_CGROUP
}

// enterCgroup readies the calling locked thread to fork into the cgroup at
// path (under root): under v1 it moves the thread there, under v2 it opens the
// directory for clone3. The caller recorded the thread's own cgroups first
// (currentHome), and brings it back from them even when enterCgroup failed
// half-way.
func enterCgroup(root, path string) (*birthCgroup, error) {
	if cgroup.Unified(root) {
		dir, err := os.Open(filepath.Join(root, path))
		if err != nil {
			return nil, fmt.Errorf("pod cgroup %s: %w", path, notFoundIfMissing(err))
		}
		return &birthCgroup{dir: dir}, nil
	}
	hs, err := holderHierarchies(root)
	if err != nil {
		return nil, err
	}
	for _, h := range hs {
		if err := moveThread(filepath.Join(h, path)); err != nil {
			return nil, fmt.Errorf("enter pod cgroup %s: %w", path, err)
		}
	}
	return &birthCgroup{}, nil
}

// apply makes the fork described by attr happen in the cgroup.
func (b *birthCgroup) apply(attr *syscall.SysProcAttr) {
	if b != nil && b.dir != nil {
		attr.UseCgroupFD = true
		attr.CgroupFD = int(b.dir.Fd())
	}
}

// unsupported reports whether a fork failed only because the kernel has no
// CLONE_INTO_CGROUP (clone3 missing, or older than its cgroup field).
func (b *birthCgroup) unsupported(err error) bool {
	return b != nil && b.dir != nil && (errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.E2BIG))
}

// withoutCgroup drops CLONE_INTO_CGROUP for a retry; the caller moves the
// holder after the fork instead.
func (b *birthCgroup) withoutCgroup(attr *syscall.SysProcAttr) {
	attr.UseCgroupFD = false
	attr.CgroupFD = 0
}

func (b *birthCgroup) close() {
	if b != nil && b.dir != nil {
		b.dir.Close()
	}
}

// moveThread moves the calling thread into the v1 cgroup dir.
func moveThread(dir string) error {
	return os.WriteFile(filepath.Join(dir, "tasks"), []byte("0"), 0)
}

// threadCgroups lists the directories of the calling thread's own v1
// cgroups in the hierarchies a holder joins, to come back to. Under v2 the
// thread never moves, and the list is empty.
func threadCgroups(root string) ([]string, error) {
	if cgroup.Unified(root) {
		return nil, nil
	}
	hs, err := holderHierarchies(root)
	if err != nil {
		return nil, err
	}
	data, err := os.ReadFile("/proc/thread-self/cgroup")
	if err != nil {
		return nil, fmt.Errorf("the shim's own cgroups: %w", err)
	}
	own, err := cgroup.Parse(root, data, false)
	if err != nil {
		return nil, fmt.Errorf("the shim's own cgroups: %w", err)
	}
	var dirs []string
	for _, h := range hs {
		// A hierarchy named like "cpu,cpuacct": any of its controllers names
		// the same directory (root/cpu is a link to it).
		dir := own.Dir(strings.Split(filepath.Base(h), ",")[0])
		if dir == "" {
			return nil, fmt.Errorf("the shim's own cgroup in the %s hierarchy is not in /proc/thread-self/cgroup", filepath.Base(h))
		}
		dirs = append(dirs, dir)
	}
	return dirs, nil
}
