package holder

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/example/containerd-shim-example-v2/cgroup"
)

// CgroupRoot is where cgroup filesystems are mounted.
var CgroupRoot = cgroup.DefaultRoot

// cgroupRemoveTimeout bounds the wait for a cgroup to empty: the kernel
// removes a killed holder from its cgroup a moment after the reaper saw it.
const cgroupRemoveTimeout = 5 * time.Second

// CgroupPath is where a pod's holder lives under the pod's cgroup parent,
// like a pause container: <parent>/<sandbox id>. A systemd slice parent
// ("kubepods-besteffort-pod1.slice") is expanded to its cgroupfs path. A
// relative parent (kubelet gives none; crictl may) is placed where runc puts
// the pod's containers for it: under v2 relative to the parent of runc's own
// cgroup, under v1 relative to that cgroup. runc runs in the shim's cgroup.
func CgroupPath(parent, id string) string {
	if parent == "" {
		return ""
	}
	p := expandSlice(parent)
	if !filepath.IsAbs(p) {
		p = filepath.Join(relativeBase(), p)
	}
	return filepath.Join(p, id)
}

// relativeBase is what runc joins a relative cgroup path to (a variable
// for tests).
var relativeBase = func() string {
	own, err := cgroup.ForPid(CgroupRoot, os.Getpid())
	if err != nil {
		return "/"
	}
	return runcRelativeBase(own, CgroupRoot)
}

// runcRelativeBase is, for a process in cgroup own (mounted under root),
// the parent of its v2 cgroup, or its v1 memory hierarchy's path (the
// holder's hierarchies are made at one path; the memory one is the one that
// matters for the pod's limits).
func runcRelativeBase(own *cgroup.Cgroup, root string) string {
	if own.V2 {
		return filepath.Dir("/" + strings.TrimPrefix(own.Dir(""), root))
	}
	if dir := own.Dir("memory"); dir != "" {
		return filepath.Clean("/" + strings.TrimPrefix(dir, filepath.Join(root, "memory")))
	}
	return "/"
}

// expandSlice turns a systemd slice name into the path systemd gives it
// ("a-b-c.slice" -> "/a.slice/a-b.slice/a-b-c.slice"; the root slice
// "-.slice" is "/", as runc's systemd driver has it); other paths are kept.
func expandSlice(p string) string {
	if p == "-.slice" {
		return "/"
	}
	if strings.Contains(p, "/") || !strings.HasSuffix(p, ".slice") {
		return p
	}
	name := strings.TrimSuffix(p, ".slice")
	out := ""
	prefix := ""
	for _, part := range strings.Split(name, "-") {
		if part == "" {
			return p // not a valid slice name: leave it to fail or work as a path
		}
		prefix += part
		out += "/" + prefix + ".slice"
		prefix += "-"
	}
	return out
}

// holderControllers are the v1 controllers whose hierarchies a holder joins:
// those accounting for what it could consume (memory, CPU, a pid). A holder
// opens no device, does no IO and sends no packet; every other hierarchy
// would only add a cgroup to make and remove per pod, and two thread moves
// per holder start (birth.go). (Under v2 there is one tree.)
var holderControllers = []string{"memory", "cpu", "cpuacct", "pids"}

// CreateCgroup makes the cgroup at path (and any missing ancestor): in the
// unified tree under v2, in the hierarchies of holderControllers under v1.
// New v2 levels get the controllers their parent offers.
func CreateCgroup(root, path string) error {
	if cgroup.Unified(root) {
		return mkdirCgroup(root, path, enableControllers)
	}
	hs, err := holderHierarchies(root)
	if err != nil {
		return err
	}
	for _, h := range hs {
		if err := mkdirCgroup(h, path, nil); err != nil {
			return err
		}
	}
	return nil
}

// holderHierarchies lists the v1 hierarchies a holder joins (those of
// holderControllers).
func holderHierarchies(root string) ([]string, error) {
	hs, err := hierarchies(root)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, h := range hs {
		if hasController(filepath.Base(h), holderControllers) {
			out = append(out, h)
		}
	}
	return out, nil
}

// hasController reports whether a v1 hierarchy named like "cpu,cpuacct"
// carries one of the controllers.
func hasController(hierarchy string, controllers []string) bool {
	for _, c := range strings.Split(hierarchy, ",") {
		for _, want := range controllers {
			if c == want {
				return true
			}
		}
	}
	return false
}

// JoinCgroup moves pid into the cgroup at path, in every hierarchy where
// CreateCgroup made it. A holder is born there instead (birth.go); this is for
// kernels without CLONE_INTO_CGROUP.
func JoinCgroup(root, path string, pid int) error {
	return cgroup.AddProcess(root, path, pid)
}

// RemoveCgroup removes the cgroup at path from every hierarchy (not its
// ancestors: the pod's parent belongs to whoever made the pod). It waits a
// little for a cgroup whose last process is still leaving.
func RemoveCgroup(root, path string) error {
	var dirs []string
	if cgroup.Unified(root) {
		dirs = []string{filepath.Join(root, path)}
	} else {
		hs, err := hierarchies(root)
		if err != nil {
			return err
		}
		for _, h := range hs {
			dirs = append(dirs, filepath.Join(h, path))
		}
	}
	var errs []error
	for _, d := range dirs {
		deadline := time.Now().Add(cgroupRemoveTimeout)
		for {
			err := os.Remove(d)
			if err == nil || errors.Is(err, fs.ErrNotExist) {
				break
			}
			if time.Now().After(deadline) {
				errs = append(errs, fmt.Errorf("remove cgroup %s: %w", d, err))
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	return errors.Join(errs...)
}

// hierarchies lists the v1 hierarchy mounts under root (directories; the
// cpu/cpuacct style symlinks and a hybrid host's unified mount excluded).
func hierarchies(root string) ([]string, error) {
	entries, err := os.ReadDir(root)
	if err != nil {
		return nil, fmt.Errorf("cgroup hierarchies under %s: %w", root, err)
	}
	var out []string
	for _, e := range entries {
		if e.IsDir() && e.Name() != "unified" {
			out = append(out, filepath.Join(root, e.Name()))
		}
	}
	return out, nil
}

// mkdirCgroup creates path under a hierarchy level by level, running init on
// each level it creates.
func mkdirCgroup(hierarchy, path string, init func(dir string, leaf bool) error) error {
	dir := hierarchy
	parts := strings.Split(strings.Trim(filepath.Clean(path), "/"), "/")
	for i, part := range parts {
		if part == "" {
			continue
		}
		dir = filepath.Join(dir, part)
		err := os.Mkdir(dir, 0o755)
		if errors.Is(err, fs.ErrExist) {
			continue
		}
		if err != nil {
			return fmt.Errorf("create cgroup %s: %w", dir, err)
		}
		if init != nil {
			if err := init(dir, i == len(parts)-1); err != nil {
				return err
			}
		}
	}
	return nil
}

// enableControllers offers a new v2 ancestor level's controllers to its
// children, the way the node's pod cgroups are set up, so the pod's cgroups
// account memory, CPU, IO and pids. The leaf is left alone: a v2 cgroup that
// offers controllers to children may hold no process itself.
func enableControllers(dir string, leaf bool) error {
	if leaf {
		return nil
	}
	parent := filepath.Dir(dir)
	data, err := os.ReadFile(filepath.Join(parent, "cgroup.subtree_control"))
	if err != nil {
		return nil // nothing to pass on
	}
	var want []string
	for _, c := range strings.Fields(string(data)) {
		want = append(want, "+"+c)
	}
	if len(want) == 0 {
		return nil
	}
	if err := os.WriteFile(filepath.Join(dir, "cgroup.subtree_control"), []byte(strings.Join(want, " ")), 0); err != nil {
		return fmt.Errorf("enable controllers in %s: %w", dir, err)
	}
	return nil
}
