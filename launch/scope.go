package launch

import (
	"fmt"
	"strings"

	"github.com/example/containerd-shim-example-v2/internal/identifier"
)

// checkNamespace refuses a namespace that does not follow containerd's rule
// for names, as the stock shim does (namespaces.NamespaceRequired). The
// namespace becomes a path element: the runtime's root is
// <DefaultRoot>/<namespace>, and a missing or ".." one would make `delete`
// run `runc delete --force <id>` one level up, where <id> names a whole
// namespace's state directory, which runc removes when it cannot load it.
func checkNamespace(namespace string) error {
	if namespace == "" {
		return fmt.Errorf("a namespace is required (-namespace)")
	}
	if !identifier.Valid(namespace) {
		return fmt.Errorf("namespace %q is not a valid containerd namespace", namespace)
	}
	return nil
}

// onePathElement reports whether s names exactly one entry of a directory:
// not empty, no '/', not "." or "..". Task ids and group ids only need this
// much here: they become the last element of a path (the runtime's state,
// the daemon socket's hash), and the runtime checks its own rule for ids. A
// stricter rule would refuse callers that drive a shim directly with ids
// runc accepts ("a+b").
func onePathElement(s string) bool {
	return s != "" && s != "." && s != ".." && !strings.ContainsAny(s, "/\x00")
}

// checkTask checks what `start` and `delete` are given to find a task.
func checkTask(f Flags) error {
	if err := checkNamespace(f.Namespace); err != nil {
		return err
	}
	if !onePathElement(f.ID) {
		return fmt.Errorf("task id %q (-id) must be one path element", f.ID)
	}
	return nil
}
