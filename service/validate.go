package service

import (
	"fmt"
	"path/filepath"
	"regexp"

	"github.com/containerd/errdefs"
)

// identifier is containerd's rule for namespaces, container and exec ids.
var identifier = regexp.MustCompile(`^[A-Za-z0-9]+(?:[._-][A-Za-z0-9]+)*$`)

// maxIdentifier is containerd's length limit for identifiers.
const maxIdentifier = 76

func invalidArgument(format string, a ...any) error {
	return fmt.Errorf(format+": %w", append(a, errdefs.ErrInvalidArgument)...)
}

// validateID checks a container or exec id. Beyond containerd's own check it
// matters here: ids become file names in the bundle and runtime state.
func validateID(kind, id string) error {
	if id == "" {
		return invalidArgument("%s must not be empty", kind)
	}
	if len(id) > maxIdentifier || !identifier.MatchString(id) {
		return invalidArgument("%s %q is not a valid identifier", kind, id)
	}
	return nil
}

// validateBundle accepts only the bundle containerd made for this task:
// <state>/io.containerd.runtime.v2.task/<namespace>/<id>, inside the same
// directory as the bundle the daemon was started in (root; empty when
// unknown). The shim writes and mounts inside it, so it must not be pointed
// anywhere else.
func validateBundle(bundle, root, namespace, id string) error {
	if bundle == "" || !filepath.IsAbs(bundle) || filepath.Clean(bundle) != bundle {
		return invalidArgument("bundle %q must be a clean absolute path", bundle)
	}
	if filepath.Base(bundle) != id || filepath.Base(filepath.Dir(bundle)) != namespace {
		return invalidArgument("bundle %q is not <state>/<namespace %s>/<id %s>", bundle, namespace, id)
	}
	if root != "" && filepath.Dir(bundle) != root {
		return invalidArgument("bundle %q is outside the task directory %s", bundle, root)
	}
	return nil
}
