package harness

import (
	"os"
	"os/exec"
	"strings"
)

// SystemdBooted reports whether systemd is the init here (sd_booted(3)'s test): runc's and
// Docker's systemd cgroup drivers can then ask it for scopes and slices. Only the systemd
// lane's guest (make test-systemd) has it; this CI machine and the plain cgroup v2 guest
// do not.
func SystemdBooted() bool {
	_, err := os.Stat("/run/systemd/system")
	return err == nil
}

// DockerUsesSystemd reports whether a dockerd started here picks its systemd cgroup driver
// by itself: it does on a cgroup v2 host whose init is systemd, unless told otherwise.
func DockerUsesSystemd() bool { return UnifiedCgroups() && SystemdBooted() }

// Systemctl runs systemctl and returns its output, trimmed.
func Systemctl(args ...string) (string, error) {
	out, err := exec.Command("systemctl", args...).CombinedOutput()
	return strings.TrimSpace(string(out)), err
}
