package sandbox

import (
	"bytes"
	"maps"
	"os"

	"github.com/example/containerd-shim-example-v2/holder"
)

// The sysctls containerd's CRI adds to every pod with a network of its own
// when it runs the pod as a pause container (its enable_unprivileged_ports and
// enable_unprivileged_icmp settings, both on by default since containerd
// 2.0): inside the pod, binding a port below 1024 and opening an ICMP echo
// socket need no capability. As a shim sandboxer the shim is handed the pod's
// config as kubelet wrote it, so it adds them itself, unless the pod sets them.
const (
	unprivilegedPortStart = "net.ipv4.ip_unprivileged_port_start"
	pingGroupRange        = "net.ipv4.ping_group_range"
)

// podSysctls are the sysctls the pod's holder writes: the pod's own, and
// CRI's defaults for a pod with a network of its own. None is added in a
// network namespace that is the shim's own (a direct caller that named the
// node's: the defaults would loosen the node), nor the ICMP one when the shim
// runs in a user namespace (its range could not name the node's groups;
// containerd leaves it out there too), nor one this kernel lacks (the port
// start is Linux 4.11's): a default must not fail the pod.
func podSysctls(cfg PodConfig, netns string) map[string]string {
	if cfg.Network != ModePod || sameFile(netns, "/proc/self/ns/net") {
		return cfg.Sysctls
	}
	out := maps.Clone(cfg.Sysctls)
	if out == nil {
		out = make(map[string]string, 2)
	}
	if !setIn(out, unprivilegedPortStart) && kernelHas(unprivilegedPortStart) {
		out[unprivilegedPortStart] = "0"
	}
	if !setIn(out, pingGroupRange) && !inUserNS() && kernelHas(pingGroupRange) {
		out[pingGroupRange] = "0 2147483647"
	}
	return out
}

// setIn says whether sysctls set the sysctl of dotted name key, under
// either of its names (kubelet passes "net/ipv4/..." on as it was written):
// a default added beside the pod's own, under another name, would be
// written before or after it by the map's order.
func setIn(sysctls map[string]string, key string) bool {
	for name := range sysctls {
		if holder.SysctlKey(name) == key {
			return true
		}
	}
	return false
}

// kernelHas says whether this kernel has a net.ipv4 sysctl (every network
// namespace has the same set).
func kernelHas(name string) bool {
	_, err := os.Stat(holder.SysctlPath(name))
	return err == nil
}

// sameFile says whether two paths lead to the same file; false if either
// cannot be read.
func sameFile(a, b string) bool {
	sa, err := os.Stat(a)
	if err != nil {
		return false
	}
	sb, err := os.Stat(b)
	return err == nil && os.SameFile(sa, sb)
}

// inUserNS says whether the shim runs in a user namespace other than the
// initial one, whose uid map is the whole range mapped onto itself.
func inUserNS() bool {
	m, err := os.ReadFile("/proc/self/uid_map")
	if err != nil {
		return false
	}
	f := bytes.Fields(m)
	return !(len(f) == 3 && string(f[0]) == "0" && string(f[1]) == "0" && string(f[2]) == "4294967295")
}
