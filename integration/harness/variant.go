package harness

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
)

// DaemonOption selects a daemon variant for NewDaemon / StartDaemon. Without options a
// daemon is the plain one described in doc.go (CRI disabled, the host's mount namespace).
type DaemonOption func(*daemonVariant)

type daemonVariant struct {
	cri           bool               // CRI plugin enabled (see WithCRI and cri.go)
	legacyCgroups bool               // run in a private mount namespace without /sys/fs/cgroup/unified
	extraHandlers []CRIHandler       // more CRI runtime handlers (WithCRIHandler)
	shimEnv       []string           // environment containerd 2.x gives every shim (WithShimEnv)
	schedCore     bool               // containerd 1.6's sched_core = true (WithSchedCore)
	runc          string             // OCI runtime linked as runc on the daemon's PATH (WithRunc)
	podNetwork    *podNetwork        // a CNI bridge network for pods (WithPodNetwork, sandbox.go)
	blockfile     bool               // the blockfile snapshotter configured (WithBlockfileSnapshotter)
	proxies       []proxySnapshotter // snapshotter proxy plugins (WithProxySnapshotter)
	rootless      *rootlessState     // run as RootlessUser in a user namespace (WithRootless, rootless.go)

	// Filled in by prepareVariant for a CRI daemon.
	streamPort string // the CRI streaming server's port on 127.0.0.1
}

// WithCRI enables containerd's CRI plugin: runtime handler CRIRuntimeHandler ("example")
// with runtime_type = Runtime() (the runtime under test), sandbox image PauseImageName,
// restrict_oom_score_adj = true (root lacks CAP_SYS_RESOURCE here), AppArmor off, CNI
// config and plugin dirs private and empty (pods must use host networking), and the
// streaming server on a free port of 127.0.0.1. See cri.go for the client side.
func WithCRI() DaemonOption { return func(v *daemonVariant) { v.cri = true } }

// WithLegacyCgroups runs the daemon (and so its shims and containers) in a private mount
// namespace where /sys/fs/cgroup/unified is unmounted, so that the cgroup v1 hybrid layout
// of the host looks like plain cgroup v1 (crun 1.8 refuses the hybrid layout). The host's
// mounts are never touched: the namespace is made with private propagation first. On a host
// without /sys/fs/cgroup/unified the option changes nothing.
func WithLegacyCgroups() DaemonOption { return func(v *daemonVariant) { v.legacyCgroups = true } }

// CRIHandler is a CRI runtime handler of the runtime under test with an options table, as
// an operator writes it in containerd's config:
//
//	[...containerd.runtimes.<Name>]
//	  runtime_type = "io.example.v2"
//	[...containerd.runtimes.<Name>.options]
//	  <Options, one `Key = value` TOML line each>
//
// containerd's CRI plugin hands the table to the shim as runtimeoptions.v1.Options: 1.6
// keeps only ConfigPath (the shim reads that TOML file); 2.x also sends the table itself as
// config_body when ConfigPath is empty.
type CRIHandler struct {
	Name    string
	Options []string
	// RuntimeType is the handler's runtime_type; empty means the runtime under test
	// (Runtime()). The benchmark maps a handler to containerd's stock shim this way.
	RuntimeType string
	// Sandboxer is the handler's `sandboxer` (containerd 2.x): "shim" has CRI call the
	// shim's Sandbox API instead of running a pause container ("" is CRI's default,
	// "podsandbox"). See WithShimSandboxer.
	Sandboxer string
}

// WithCRIHandler adds a runtime handler to a CRI daemon (implies WithCRI), next to
// CRIRuntimeHandler, so a test can run pods whose runtime options come from the config.
func WithCRIHandler(h CRIHandler) DaemonOption {
	return func(v *daemonVariant) {
		v.cri = true
		v.extraHandlers = append(v.extraHandlers, h)
	}
}

// WithShimEnv has containerd give every shim these environment variables ("K=V"), through
// the shim manager's `env` setting. containerd 2.x only: 1.6 has no such setting, and a
// daemon of that flavor with this option fails to start.
func WithShimEnv(env ...string) DaemonOption {
	return func(v *daemonVariant) { v.shimEnv = append(v.shimEnv, env...) }
}

// WithSchedCore sets containerd 1.6's `sched_core = true`, which makes containerd start
// shims with SCHED_CORE=1 in their environment (for 2.x, use WithShimEnv("SCHED_CORE=1")).
func WithSchedCore() DaemonOption { return func(v *daemonVariant) { v.schedCore = true } }

// WithBlockfileSnapshotter configures containerd's blockfile snapshotter (containerd 1.7
// and later; plugin "blockfile"), which keeps each snapshot as an ext4 image and hands it
// out as {Type: ext4, Source: <image>, Options: [loop, rw]}: the runtime mounts the rootfs
// from a loop device. Its empty scratch image is made with mkfs.ext4 in the daemon's base.
func WithBlockfileSnapshotter() DaemonOption { return func(v *daemonVariant) { v.blockfile = true } }

type proxySnapshotter struct{ name, address string }

// WithProxySnapshotter has containerd use the snapshotter served at address (a gRPC unix
// socket) under name, as a proxy plugin (see FuseOverlayfsSnapshotter for one).
func WithProxySnapshotter(name, address string) DaemonOption {
	return func(v *daemonVariant) { v.proxies = append(v.proxies, proxySnapshotter{name, address}) }
}

// BlockfileScratch is the empty ext4 image the blockfile snapshotter copies for each new
// snapshot.
func (d *Daemon) BlockfileScratch() string { return filepath.Join(d.Base, "blockfile-scratch.img") }

// WithRunc puts this runc binary first on the daemon's PATH (as `runc`), for this daemon
// only; without it, $TEST_RUNC (RuncUnderTest) or the host's runc is used.
func WithRunc(path string) DaemonOption { return func(v *daemonVariant) { v.runc = path } }

func (v *daemonVariant) runcBinary() string {
	if v.runc != "" {
		return v.runc
	}
	return RuncUnderTest()
}

// UnifiedCgroupMount is the cgroup2 mount of a hybrid cgroup layout.
var UnifiedCgroupMount = "/sys/fs/cgroup/unified"

// HybridCgroups reports whether the host has the cgroup v1 hybrid layout (cgroup2 mounted
// at UnifiedCgroupMount).
func HybridCgroups() bool {
	for _, m := range MountsUnder(UnifiedCgroupMount) {
		if m.Point == UnifiedCgroupMount && m.FSType == "cgroup2" {
			return true
		}
	}
	return false
}

// prepareVariant creates what a variant needs before the config is written.
func (d *Daemon) prepareVariant() error {
	if len(d.variant.shimEnv) > 0 && !d.Is2x() {
		return fmt.Errorf("WithShimEnv needs containerd 2.x, not %s", d.Flavor)
	}
	if d.variant.schedCore && d.Is2x() {
		return fmt.Errorf("WithSchedCore is containerd 1.6's setting, not %s's (use WithShimEnv)", d.Flavor)
	}
	if d.variant.blockfile {
		if !FlavorAtLeast(d.Flavor, "1.7") {
			return fmt.Errorf("WithBlockfileSnapshotter needs containerd 1.7 or later, not %s", d.Flavor)
		}
		// Sparse: the 64 MiB cost only what the filesystem's metadata takes.
		out, err := exec.Command("mkfs.ext4", "-q", "-F", d.BlockfileScratch(), "64M").CombinedOutput()
		if err != nil {
			return fmt.Errorf("blockfile scratch image: mkfs.ext4: %v: %s", err, out)
		}
	}
	if !d.variant.cri {
		return nil
	}
	for _, dir := range []string{d.CNIConfDir(), d.CNIBinDir(), d.PodLogRoot()} {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
	}
	if err := d.prepareSandboxVariant(); err != nil {
		return err
	}
	// A free port now; the daemon binds it a moment later (the race is harmless here: only
	// this process picks ports this way, and a clash fails the daemon's start loudly).
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("pick a port for the CRI streaming server: %w", err)
	}
	d.variant.streamPort = strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
	l.Close()
	return nil
}

// variantDisabled returns the plugins to disable, given the plain daemon's list.
func (d *Daemon) variantDisabled(disabled []string) []string {
	if !d.variant.cri {
		return disabled
	}
	var out []string
	for _, p := range disabled {
		// NRI stays off: it listens on a host-wide socket.
		if p == `"io.containerd.nri.v1.nri"` {
			out = append(out, p)
		}
	}
	return out
}

// variantConfig returns the config sections a variant adds.
func (d *Daemon) variantConfig() string {
	var b strings.Builder
	if d.variant.schedCore {
		fmt.Fprintf(&b, "\n[plugins.\"io.containerd.runtime.v2.task\"]\n  sched_core = true\n")
	}
	if len(d.variant.shimEnv) > 0 {
		quoted := make([]string, len(d.variant.shimEnv))
		for i, kv := range d.variant.shimEnv {
			quoted[i] = strconv.Quote(kv)
		}
		fmt.Fprintf(&b, "\n[plugins.\"io.containerd.shim.v1.manager\"]\n  env = [%s]\n", strings.Join(quoted, ", "))
	}
	for _, p := range d.variant.proxies {
		fmt.Fprintf(&b, "\n[proxy_plugins.%q]\n  type = \"snapshot\"\n  address = %q\n", p.name, p.address)
	}
	if d.variant.blockfile {
		fmt.Fprintf(&b, "\n[plugins.\"io.containerd.snapshotter.v1.blockfile\"]\n  scratch_file = %q\n  fs_type = \"ext4\"\n", d.BlockfileScratch())
	}
	if !d.variant.cri {
		return b.String()
	}
	handler := func(section string) {
		fmt.Fprintf(&b, "[%s.containerd.runtimes.%s]\n  runtime_type = %q\n\n", section, CRIRuntimeHandler, Runtime())
		for _, h := range d.variant.extraHandlers {
			rt := h.RuntimeType
			if rt == "" {
				rt = Runtime()
			}
			fmt.Fprintf(&b, "[%s.containerd.runtimes.%s]\n  runtime_type = %q\n", section, h.Name, rt)
			if h.Sandboxer != "" {
				fmt.Fprintf(&b, "  sandboxer = %q\n", h.Sandboxer)
			}
			fmt.Fprintf(&b, "[%s.containerd.runtimes.%s.options]\n", section, h.Name)
			for _, line := range h.Options {
				fmt.Fprintf(&b, "  %s\n", line)
			}
			b.WriteString("\n")
		}
	}
	common := func() {
		fmt.Fprintf(&b, "  restrict_oom_score_adj = true\n  disable_apparmor = true\n")
	}
	switch {
	case !d.Is2x(): // 1.6 and 1.7 share the one CRI plugin
		const sec = `plugins."io.containerd.grpc.v1.cri"`
		fmt.Fprintf(&b, "\n[%s]\n  sandbox_image = %q\n", sec, PauseImageName)
		common()
		fmt.Fprintf(&b, "  stream_server_address = \"127.0.0.1\"\n  stream_server_port = %q\n\n", d.variant.streamPort)
		// 1.6 forgets its default "runc" handler once runtimes are configured.
		fmt.Fprintf(&b, "[%s.containerd]\n  snapshotter = \"overlayfs\"\n  default_runtime_name = %q\n\n", sec, CRIRuntimeHandler)
		handler(sec)
		fmt.Fprintf(&b, "[%s.cni]\n  bin_dir = %q\n  conf_dir = %q\n", sec, d.CNIBinDir(), d.CNIConfDir())
	default:
		fmt.Fprintf(&b, "\n[plugins.\"io.containerd.grpc.v1.cri\"]\n")
		fmt.Fprintf(&b, "  stream_server_address = \"127.0.0.1\"\n  stream_server_port = %q\n\n", d.variant.streamPort)
		fmt.Fprintf(&b, "[plugins.\"io.containerd.cri.v1.images\"]\n  snapshotter = \"overlayfs\"\n\n")
		fmt.Fprintf(&b, "[plugins.\"io.containerd.cri.v1.images\".pinned_images]\n  sandbox = %q\n\n", PauseImageName)
		const sec = `plugins."io.containerd.cri.v1.runtime"`
		fmt.Fprintf(&b, "[%s]\n", sec)
		common()
		fmt.Fprintf(&b, "  enable_cdi = false\n")
		b.WriteString(d.podNetworkRuntimeConfig())
		b.WriteString("\n")
		handler(sec)
		fmt.Fprintf(&b, "[%s.cni]\n  bin_dirs = [%q]\n  conf_dir = %q\n", sec, d.CNIBinDir(), d.CNIConfDir())
	}
	return b.String()
}

// daemonCommand builds the command that runs containerd for this variant. Whatever the
// variant, the process that ends up running is containerd itself (exec, no fork), so Pid and
// Stop address the daemon directly.
func (d *Daemon) daemonCommand() *exec.Cmd {
	if d.variant.rootless != nil {
		return d.rootlessCommand()
	}
	if d.variant.legacyCgroups && HybridCgroups() {
		// unshare(1) enters a new mount namespace with private propagation (so the unmount
		// stays inside), then the shell unmounts the cgroup2 hierarchy and execs containerd.
		return exec.Command("unshare", "--mount", "--propagation", "private", "--",
			"/bin/sh", "-c", `umount "$0" && exec "$@"`, UnifiedCgroupMount,
			d.Containerd, "--config", d.ConfigPath)
	}
	return exec.Command(d.Containerd, "--config", d.ConfigPath)
}

// CNIConfDir is the (empty) CNI config dir of a CRI daemon.
func (d *Daemon) CNIConfDir() string { return filepath.Join(d.Base, "cni", "net.d") }

// CNIBinDir is the (empty) CNI plugin dir of a CRI daemon.
func (d *Daemon) CNIBinDir() string { return filepath.Join(d.Base, "cni", "bin") }

// PodLogRoot is where CRI tests put their pods' log directories.
func (d *Daemon) PodLogRoot() string { return filepath.Join(d.Base, "pods") }

// OwnMountNamespace reports a daemon run in a mount namespace of its own
// (WithLegacyCgroups on a hybrid host, WithRootless): its mounts, and its
// shims' and containers', are not in the host's (MountNamespaceMounts).
func (d *Daemon) OwnMountNamespace() bool {
	return d.variant.rootless != nil || d.variant.legacyCgroups && HybridCgroups()
}

// MountNamespaceMounts lists the mounts at or below dir as the daemon's own mount namespace
// sees them (for WithLegacyCgroups daemons, whose mounts the host does not see).
func (d *Daemon) MountNamespaceMounts(dir string) []string {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/mountinfo", d.Pid()))
	if err != nil {
		return nil
	}
	var out []string
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) < 5 {
			continue
		}
		mp := unescapeMountinfo(f[4])
		if mp == dir || strings.HasPrefix(mp, dir+"/") {
			out = append(out, mp)
		}
	}
	return out
}
