package cgroup

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

// busyRetry is how often RemoveEmpty tries a busy cgroup again.
const busyRetry = 20 * time.Millisecond

// RemoveEmpty removes the cgroup at path (a cgroupfs path such as
// "/kubepods/pod1/ctr") under root: the v2 directory, or that path in every
// hierarchy mounted there (a hybrid host's unified tree and named ones such
// as name=systemd included: a runtime makes it in each). It only ever
// removes a directory, which the kernel refuses while the cgroup holds a
// process or a child cgroup: such a cgroup is tried again until busyFor has
// passed (a process on its way out, such as the runtime's half-made init
// after its parent was killed), then left and reported. A path found
// nowhere is nothing to do.
func RemoveEmpty(root, path string, busyFor time.Duration) error {
	path = filepath.Clean("/" + path)
	if path == "/" {
		return fmt.Errorf("remove cgroup: refusing the root cgroup")
	}
	var dirs []string
	if Unified(root) {
		dirs = []string{filepath.Join(root, path)}
	} else {
		hierarchies, err := os.ReadDir(root)
		if err != nil {
			return fmt.Errorf("remove cgroup %s: %w", path, err)
		}
		for _, h := range hierarchies {
			if h.IsDir() { // "cpu" and "cpuacct" are links to "cpu,cpuacct"
				dirs = append(dirs, filepath.Join(root, h.Name(), path))
			}
		}
	}
	deadline := time.Now().Add(busyFor)
	var errs []error
	for _, dir := range dirs {
		for {
			err := unix.Rmdir(dir)
			if err == nil || errors.Is(err, unix.ENOENT) {
				break
			}
			if !errors.Is(err, unix.EBUSY) || time.Now().After(deadline) {
				errs = append(errs, fmt.Errorf("remove cgroup %s: %w", dir, err))
				break
			}
			time.Sleep(busyRetry)
		}
	}
	return errors.Join(errs...)
}
