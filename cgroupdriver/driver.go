// Package cgroupdriver decides which of the OCI runtime's cgroup drivers a
// container's spec was written for, when the runtime options do not say.
//
// runc and crun have two: cgroupfs, which takes linux.cgroupsPath for a
// directory, and systemd (--systemd-cgroup), which takes it as
// "<slice>:<prefix>:<name>" and asks systemd for a scope <prefix>-<name>.scope
// in that slice. The option that picks one, SystemdCgroup, does not always
// reach a shim whose runtime type is not runc's: containerd 1.6's CRI plugin
// keeps only ConfigPath of such a handler's options table, and dockerd, on a
// cgroup v2 host run by systemd, uses its systemd driver (a path such as
// "system.slice:docker:<id>") but tells only runc's shim so. Under cgroupfs
// the runtime makes a directory named after the whole string, beside the
// shim's own cgroup: the container leaves its pod's slice and limits.
package cgroupdriver

import (
	"os"
	"strings"
)

// SystemdBooted reports whether systemd is the init (sd_booted(3)'s test);
// a variable for tests.
var SystemdBooted = func() bool {
	_, err := os.Stat("/run/systemd/system")
	return err == nil
}

// WantsSystemd reports whether a spec's cgroupsPath asks for the systemd
// driver: it has systemd's form and systemd runs. Without systemd the
// systemd driver could only fail, so such a path is left to cgroupfs, as
// before.
func WantsSystemd(cgroupsPath string) bool {
	return IsSystemdPath(cgroupsPath) && SystemdBooted()
}

// IsSystemdPath reports whether p has the form runc's systemd driver accepts:
// three fields separated by colons, the first empty (the default slice) or a
// slice name, the last a name; no field a path. No cgroupfs caller writes
// such a path: its directory would be named "<x>.slice:<prefix>:<name>".
func IsSystemdPath(p string) bool {
	slice, rest, ok := strings.Cut(p, ":")
	if !ok {
		return false
	}
	_, name, ok := strings.Cut(rest, ":")
	if !ok || name == "" || strings.Contains(name, ":") {
		return false
	}
	if slice != "" && (!strings.HasSuffix(slice, ".slice") || slice == ".slice") {
		return false
	}
	return !strings.Contains(p, "/")
}
