package cgroup

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/containerd/errdefs"
)

// AtPath is the cgroup at path (e.g. a pod's cgroup parent, "/kubepods/pod1")
// under root: the v2 directory, or that path in every v1 hierarchy mounted
// there. It fails with NotFound when the path exists in none.
func AtPath(root, path string) (*Cgroup, error) {
	cg := &Cgroup{V2: Unified(root), dirs: make(map[string]string), root: root}
	if cg.V2 {
		dir := filepath.Join(root, path)
		if _, err := os.Stat(dir); err != nil {
			return nil, fmt.Errorf("cgroup %s: %w", path, errdefs.ErrNotFound)
		}
		cg.dirs[""] = dir
		return cg, nil
	}
	hierarchies, err := os.ReadDir(root)
	if err != nil {
		return nil, fmt.Errorf("cgroup %s: %w", path, err)
	}
	for _, h := range hierarchies {
		// "cpu,cpuacct" holds both controllers; a hybrid host's v2 tree at
		// root/unified carries none of the v1 controllers.
		if !h.IsDir() || h.Name() == "unified" {
			continue
		}
		dir := filepath.Join(root, h.Name(), path)
		if _, err := os.Stat(dir); err != nil {
			continue
		}
		for _, c := range strings.Split(h.Name(), ",") {
			cg.dirs[c] = dir
		}
	}
	if len(cg.dirs) == 0 {
		return nil, fmt.Errorf("cgroup %s exists in no hierarchy under %s: %w", path, root, errdefs.ErrNotFound)
	}
	return cg, nil
}
