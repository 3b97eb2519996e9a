package process

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/example/containerd-shim-example-v2/cgroup"
)

// cgroupLeftWait bounds the wait for a left cgroup to empty: the runtime's
// half-made init, in it, exits by itself once it reads the end of its
// killed parent's sync pipe, a few milliseconds on. (The shim's delete
// command has 5 s in all.)
const cgroupLeftWait = 500 * time.Millisecond

// RemoveCgroupsLeft removes the bundle's container's cgroups where a
// runtime killed during its create left them: it makes them before it
// records the container, so its `delete --force` then finds no container
// and removes only its state directory, and the cgroups would stay in every
// hierarchy for good. The runtime dies so with its shim (it is tethered to
// it) or by a kill of its own (the OOM killer, an operator). Only empty
// cgroups go (cgroup.RemoveEmpty): a running container's stay. Used after a
// create or restore failed and by the shim's delete command.
//
// Only a cgroupfs path is handled: under the systemd driver (systemdDriver)
// the runtime asked systemd for a scope, which systemd stops once empty, and
// a relative path is placed by the runtime where the shim cannot tell.
func RemoveCgroupsLeft(bundle string, systemdDriver bool) error {
	if systemdDriver {
		return nil
	}
	data, err := os.ReadFile(filepath.Join(bundle, "config.json"))
	if err != nil {
		return nil // no spec, no container was made from it
	}
	var spec bundleSpec
	if err := json.Unmarshal(data, &spec); err != nil {
		return fmt.Errorf("config.json of %s: %w", bundle, err)
	}
	path := cgroupsPath(&spec)
	if !filepath.IsAbs(path) || filepath.Clean(path) == "/" {
		return nil
	}
	return cgroup.RemoveEmpty(cgroup.DefaultRoot, path, cgroupLeftWait)
}
