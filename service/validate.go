package service

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/containerd/errdefs"
	"github.com/example/containerd-shim-example-v2/internal/identifier"
)

func invalidArgument(format string, a ...any) error {
	return fmt.Errorf(format+": %w", append(a, errdefs.ErrInvalidArgument)...)
}

// validateID checks a container or exec id. Beyond containerd's own check it
// matters here: ids become file names in the bundle and runtime state.
func validateID(kind, id string) error {
	if id == "" {
		return invalidArgument("%s must not be empty", kind)
	}
	if !identifier.Valid(id) {
		return invalidArgument("%s %q is not a valid identifier", kind, id)
	}
	return nil
}

// validateExecID checks an exec id, which must also differ from its
// container's: events name an exec by its id and the init by the
// container's, and clients (CRI, Docker's daemon, others) tell a
// container's exit from an exec's by TaskExit.ID == ContainerID, so an
// exec named like its container would exit as the container. The stock
// shim accepts it; no client needs it (CRI, Docker and nerdctl make random
// exec ids).
func validateExecID(containerID, execID string) error {
	if err := validateID("exec id", execID); err != nil {
		return err
	}
	if execID == containerID {
		return invalidArgument("exec id %q is its container's id: its events would read as the container's", execID)
	}
	return nil
}

// validateBundle accepts any bundle a caller can legitimately hand us: a
// clean absolute path to a directory holding config.json. containerd puts
// bundles under <state>/io.containerd.runtime.v2.task/<ns>/<id>, but test
// harnesses, other managers and Docker's tooling keep them elsewhere, and the
// stock shim takes them all. Only root (same uid as the daemon) reaches the
// socket, so a narrower rule would protect nothing. What it does guard: the
// shim mounts <bundle>/rootfs and writes files beside config.json, so a
// relative or unclean path (one that reads differently after a chdir or a
// symlink swap of "..") is refused, and so is a bundle that is not there.
func validateBundle(bundle string) error {
	if bundle == "" || !filepath.IsAbs(bundle) || filepath.Clean(bundle) != bundle {
		return invalidArgument("bundle %q must be a clean absolute path", bundle)
	}
	if err := checkDir("bundle", bundle, true); err != nil {
		return err
	}
	spec, err := os.Stat(filepath.Join(bundle, "config.json"))
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("bundle %s has no config.json: %w", bundle, errdefs.ErrNotFound)
	case err != nil:
		return invalidArgument("bundle %s: %v", bundle, err)
	case !spec.Mode().IsRegular():
		return invalidArgument("bundle %s: config.json is not a regular file", bundle)
	}
	return nil
}

// checkImageDir checks a CRIU image directory a request names: an absolute
// path (the runtime would resolve a relative one in the daemon's working
// directory, a task's bundle) and, where something is there, a directory.
// A restore's must be there: the runtime would create an empty one on the
// host, leave it, and fail with an Unknown error.
func checkImageDir(what, path string, mustExist bool) error {
	if !filepath.IsAbs(path) || strings.IndexByte(path, 0) >= 0 {
		return invalidArgument("%s %q must be an absolute path", what, path)
	}
	return checkDir(what, path, mustExist)
}

// checkDir checks that path, if there, is a directory (InvalidArgument
// otherwise); one that is not there is NotFound when it must be.
func checkDir(what, path string, mustExist bool) error {
	st, err := os.Stat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist) && mustExist:
		return fmt.Errorf("%s %s does not exist: %w", what, path, errdefs.ErrNotFound)
	case errors.Is(err, fs.ErrNotExist):
		return nil
	case err != nil:
		return invalidArgument("%s %s: %v", what, path, err)
	case !st.IsDir():
		return invalidArgument("%s %s is not a directory", what, path)
	}
	return nil
}
