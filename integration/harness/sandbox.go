package harness

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
)

// Pods without pause containers (containerd 2.x, sandboxer = "shim"): the runtime handler
// that has CRI call the shim's Sandbox API, a CNI network for pods that need one of their
// own, and where the shim and CRI keep a shim-mode pod's things.

// CRIShimHandler is the runtime handler WithShimSandboxer adds: runtime_type = Runtime(),
// sandboxer = "shim".
const CRIShimHandler = "example-shim"

// WithShimSandboxer adds the runtime handler CRIShimHandler to a CRI daemon (containerd 2.x
// only) with these option lines (see CRIHandler), next to the podsandbox-mode handler
// CRIRuntimeHandler, which keeps working as before.
func WithShimSandboxer(options ...string) DaemonOption {
	return WithCRIHandler(CRIHandler{Name: CRIShimHandler, Sandboxer: "shim", Options: options})
}

// PodSubnet is the pod network's address range: TEST-NET-1 (RFC 5737), a documentation range
// that no real network uses. The bridge has no address in it and nothing is routed or
// masqueraded: pods get addresses and an interface, and no packet leaves the host's bridge.
const PodSubnet = "192.0.2.0/24"

// CNIPluginsVersion is the release of the CNI plugins scripts/deps-cni.sh builds.
const CNIPluginsVersion = "v1.9.1"

// CNIPluginDir holds the bridge, host-local and loopback CNI plugins: $CNI_PLUGIN_DIR, else
// /opt/cni-plugins/<CNIPluginsVersion>/bin (scripts/deps-cni.sh).
func CNIPluginDir() string {
	if d := os.Getenv("CNI_PLUGIN_DIR"); d != "" {
		return d
	}
	return filepath.Join("/opt/cni-plugins", CNIPluginsVersion, "bin")
}

// cniPlugins are the plugins the pod network uses (loopback: CRI sets up every pod's lo).
var cniPlugins = []string{"bridge", "host-local", "loopback"}

// podNetwork is a daemon's CNI network: a bridge of its own (name unique on the host), IPAM
// state under the daemon's directory, and network namespaces pinned there too
// (netns_mounts_under_state_dir), so nothing of it lands in the host's /var/run/netns or
// /var/lib/cni.
type podNetwork struct {
	bridge string
}

// WithPodNetwork gives a CRI daemon (containerd 2.x) a CNI network for pods that do not use
// the node's network: a bridge named "exsb<random>" with addresses from PodSubnet. Stop
// removes the bridge.
func WithPodNetwork() DaemonOption {
	return func(v *daemonVariant) {
		v.cri = true
		v.podNetwork = &podNetwork{bridge: "exsb" + RandID(8)}
	}
}

// PodBridge is the name of the daemon's pod network bridge ("" without WithPodNetwork).
func (d *Daemon) PodBridge() string {
	if d.variant.podNetwork == nil {
		return ""
	}
	return d.variant.podNetwork.bridge
}

// prepareSandboxVariant checks the sandbox options against the flavor and writes the pod
// network's CNI config and plugin links.
func (d *Daemon) prepareSandboxVariant() error {
	for _, h := range d.variant.extraHandlers {
		if h.Sandboxer != "" && !d.Is2x() {
			return fmt.Errorf("runtime handler %s: sandboxer = %q needs containerd 2.x, not %s (1.6 has no Sandbox API)", h.Name, h.Sandboxer, d.Flavor)
		}
	}
	n := d.variant.podNetwork
	if n == nil {
		return nil
	}
	if !d.Is2x() {
		return fmt.Errorf("WithPodNetwork needs containerd 2.x, not %s", d.Flavor)
	}
	for _, p := range cniPlugins {
		src := filepath.Join(CNIPluginDir(), p)
		if _, err := os.Stat(src); err != nil {
			return fmt.Errorf("CNI plugin %s: %w (run scripts/deps-cni.sh)", p, err)
		}
		if err := os.Symlink(src, filepath.Join(d.CNIBinDir(), p)); err != nil {
			return err
		}
	}
	conf := map[string]any{
		"cniVersion": "1.0.0",
		"name":       n.bridge,
		"plugins": []any{map[string]any{
			"type":        "bridge",
			"bridge":      n.bridge,
			"isGateway":   false,
			"ipMasq":      false,
			"hairpinMode": false,
			"ipam": map[string]any{
				"type":    "host-local",
				"ranges":  []any{[]any{map[string]any{"subnet": PodSubnet}}},
				"dataDir": filepath.Join(d.Base, "cni", "ipam"),
			},
		}},
	}
	data, err := json.MarshalIndent(conf, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(d.CNIConfDir(), "10-"+n.bridge+".conflist"), data, 0o644)
}

// podNetworkRuntimeConfig is what the pod network adds to the CRI runtime plugin's section.
func (d *Daemon) podNetworkRuntimeConfig() string {
	if d.variant.podNetwork == nil {
		return ""
	}
	return "  netns_mounts_under_state_dir = true\n"
}

// teardownPodNetwork removes the daemon's bridge (CNI's DEL removes the pods' veths, not the
// bridge). The name is unique to this daemon, so nothing else is touched.
func (d *Daemon) teardownPodNetwork() error {
	n := d.variant.podNetwork
	if n == nil {
		return nil
	}
	if _, err := os.Stat(filepath.Join("/sys/class/net", n.bridge)); err != nil {
		return nil
	}
	if out, err := exec.Command("ip", "link", "del", n.bridge).CombinedOutput(); err != nil {
		return fmt.Errorf("remove pod bridge %s: %v: %s", n.bridge, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// SandboxBundleDir is a shim-mode pod's bundle: containerd's shim sandbox controller keeps
// it (with the shim's `address`, bootstrap.json, and the shim's record of what it made for
// the pod) under its own state directory.
func (d *Daemon) SandboxBundleDir(ns, id string) string {
	return filepath.Join(d.State, "io.containerd.sandbox.controller.v1.shim", ns, id)
}

// CRISandboxDirs are CRI's per-pod directories (hostname, hosts and resolv.conf in the
// first; shm in the second), which the shim fills in shim mode.
func (d *Daemon) CRISandboxDirs(id string) (root, state string) {
	return filepath.Join(d.Root, "io.containerd.grpc.v1.cri", "sandboxes", id),
		filepath.Join(d.State, "io.containerd.grpc.v1.cri", "sandboxes", id)
}

// HolderProcesses lists the pod namespace holders of the shim under test whose sandbox id is
// id ("" for all): processes running "<shim binary> pod-holder <sandbox id>".
func HolderProcesses(id string) []Proc {
	return Processes(func(args []string) bool {
		return len(args) == 3 && filepath.Base(args[0]) == ShimBinaryName && args[1] == "pod-holder" &&
			(id == "" || args[2] == id)
	})
}

// SandboxLeftovers lists what remains of a shim-mode pod after its removal: its holder, its
// bundle, CRI's pod directories, mounts under the daemon's directory naming the pod, and its
// holder's cgroup <cgroupParent>/<id> in any hierarchy.
func (d *Daemon) SandboxLeftovers(id, cgroupParent string) []string {
	var out []string
	for _, p := range HolderProcesses(id) {
		if procAlive(p.Pid) {
			out = append(out, "holder process "+p.String())
		}
	}
	root, state := d.CRISandboxDirs(id)
	for _, p := range []string{d.SandboxBundleDir(CRINamespace, id), root, state} {
		if _, err := os.Lstat(p); err == nil {
			out = append(out, "path "+p)
		}
	}
	for _, m := range MountsUnder(d.Base) {
		if strings.Contains(m.Point, "/"+id) {
			out = append(out, fmt.Sprintf("mount %s (%s)", m.Point, m.FSType))
		}
	}
	if cgroupParent != "" {
		for _, h := range CgroupHierarchies() {
			p := filepath.Join(h, cgroupParent, id)
			if _, err := os.Stat(p); err == nil {
				out = append(out, "cgroup "+p)
			}
		}
	}
	return out
}

// ProcMemory is a process's resident memory from /proc/<pid>/status, in KiB.
type ProcMemory struct {
	RSS, Anon, File, Shmem int
}

// ReadProcMemory reads VmRSS, RssAnon, RssFile and RssShmem of pid.
func ReadProcMemory(pid int) (ProcMemory, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return ProcMemory{}, err
	}
	var m ProcMemory
	fields := map[string]*int{"VmRSS:": &m.RSS, "RssAnon:": &m.Anon, "RssFile:": &m.File, "RssShmem:": &m.Shmem}
	found := 0
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 {
			if p, ok := fields[f[0]]; ok {
				*p, _ = strconv.Atoi(f[1])
				found++
			}
		}
	}
	if found == 0 {
		return m, errors.New("no memory figures in /proc/" + strconv.Itoa(pid) + "/status (a zombie?)")
	}
	return m, nil
}
