package harness

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// RootlessUser is the unprivileged user a WithRootless daemon runs as (scripts/deps.sh
// creates it, with a range of subordinate uids and gids in /etc/subuid and /etc/subgid).
const RootlessUser = "ex-rootless"

// rootlessState is what prepareRootless found and made for a WithRootless daemon.
type rootlessState struct {
	uid, gid uint32
	// cgroup is the delegated cgroup (a path below /sys/fs/cgroup, "/ex-rootless-…") on a
	// cgroup v2 host, as systemd's Delegate=yes gives a rootless daemon's unit; "" on v1,
	// where an unprivileged user gets no cgroup and containers run without one.
	cgroup   string
	cgroupFD *os.File // cgroup + "/daemon", where the daemon is born (CLONE_INTO_CGROUP)
	// undelegated: the cgroup stays root's (WithRootlessUndelegated); cgroup is then
	// only where the daemon is born, not a parent for containers.
	undelegated bool
}

// WithRootless runs containerd the way rootless containerd runs (rootlesskit, as
// nerdctl's containerd-rootless.sh sets it up): as the unprivileged RootlessUser, inside a
// user namespace that maps that user to root and its subordinate ids to 1..65536, in a
// mount namespace of its own with a private tmpfs on /run/containerd. Its shims, runtimes and
// containers inherit all of that: the shim runs as "root" without any privilege on the
// host. On a cgroup v2 host the daemon is born in a cgroup delegated to the user
// (RootlessCgroupsPath names one for a container); on v1 it gets none. Ctr runs ctr in the
// daemon's namespaces as the user, as rootless users do. The host's network namespace is kept
// (rootlesskit's --net=host).
func WithRootless() DaemonOption { return func(v *daemonVariant) { v.rootless = &rootlessState{} } }

// WithRootlessUndelegated is WithRootless on a cgroup v2 host that delegates no cgroup to
// the user (no systemd Delegate=yes): the daemon is born in a cgroup of root's, as in a
// user's session scope, and the runtime can make no cgroup for a container, which stays in
// the shim's. On cgroup v1 it is WithRootless.
func WithRootlessUndelegated() DaemonOption {
	return func(v *daemonVariant) { v.rootless = &rootlessState{undelegated: true} }
}

// RootlessCgroupsPath is the cgroupsPath a container of a WithRootless daemon can use:
// below the delegated cgroup on a cgroup v2 host, "" (no cgroup) on v1. Any other path is
// one the user may not create.
func (d *Daemon) RootlessCgroupsPath(id string) string {
	r := d.variant.rootless
	if r == nil || r.cgroup == "" || r.undelegated {
		return ""
	}
	return r.cgroup + "/" + id
}

// RootlessUID is the host uid a WithRootless daemon and its shims run as (0 otherwise).
func (d *Daemon) RootlessUID() int {
	if d.variant.rootless == nil {
		return 0
	}
	return int(d.variant.rootless.uid)
}

// UnifiedCgroups reports whether the host's resource controllers are on cgroup v2 (a pure
// v2 host; a hybrid host keeps them on v1, with v2 only at UnifiedCgroupMount).
func UnifiedCgroups() bool {
	_, err := os.Stat("/sys/fs/cgroup/cgroup.controllers")
	return err == nil
}

// prepareRootless looks the user up, hands the daemon's directory to it and, on cgroup v2,
// makes the delegated cgroup.
func (d *Daemon) prepareRootless() error {
	r := d.variant.rootless
	u, err := user.Lookup(RootlessUser)
	if err != nil {
		return fmt.Errorf("WithRootless: user %s (run `make deps`, scripts/deps.sh creates it): %w", RootlessUser, err)
	}
	for _, f := range []string{"/etc/subuid", "/etc/subgid"} {
		data, _ := os.ReadFile(f)
		if !strings.Contains("\n"+string(data), "\n"+RootlessUser+":") {
			return fmt.Errorf("WithRootless: %s has no range for %s (run `make deps`)", f, RootlessUser)
		}
	}
	if err := os.MkdirAll("/run/containerd", 0o711); err != nil { // the private tmpfs's mount point
		return err
	}
	if _, err := exec.LookPath("newuidmap"); err != nil {
		return fmt.Errorf("WithRootless: newuidmap (Debian's uidmap; run `make deps`): %w", err)
	}
	uid, _ := strconv.ParseUint(u.Uid, 10, 32)
	gid, _ := strconv.ParseUint(u.Gid, 10, 32)
	r.uid, r.gid = uint32(uid), uint32(gid)
	// Everything below the base is the daemon's; the base's parent (BaseDir, 0711) only
	// has to be passable.
	if err := chownTree(d.Base, int(uid), int(gid)); err != nil {
		return fmt.Errorf("WithRootless: hand %s to %s: %w", d.Base, RootlessUser, err)
	}
	if !UnifiedCgroups() {
		return nil
	}
	return r.delegateCgroup(filepath.Base(d.Base))
}

// delegateCgroup makes /sys/fs/cgroup/ex-rootless-<name> with its controllers enabled for
// its children and, unless undelegated, gives it to the user. The daemon is born in its
// child "daemon", since a cgroup whose children use controllers may hold no process.
func (r *rootlessState) delegateCgroup(name string) error {
	const root = "/sys/fs/cgroup"
	r.cgroup = "/ex-rootless-" + name
	dir := filepath.Join(root, r.cgroup)
	if err := os.Mkdir(dir, 0o755); err != nil {
		return fmt.Errorf("WithRootless: delegated cgroup: %w", err)
	}
	available, err := os.ReadFile(filepath.Join(root, "cgroup.controllers"))
	if err != nil {
		return err
	}
	for _, c := range []string{"cpu", "memory", "pids"} {
		if !strings.Contains(" "+strings.TrimSpace(string(available))+" ", " "+c+" ") {
			continue
		}
		for _, p := range []string{root, dir} {
			if err := os.WriteFile(filepath.Join(p, "cgroup.subtree_control"), []byte("+"+c), 0); err != nil {
				return fmt.Errorf("WithRootless: enable %s in %s: %w", c, p, err)
			}
		}
	}
	daemon := filepath.Join(dir, "daemon")
	if err := os.Mkdir(daemon, 0o755); err != nil {
		return err
	}
	if !r.undelegated {
		if err := r.delegate(dir, daemon); err != nil {
			return err
		}
	}
	r.cgroupFD, err = os.Open(daemon)
	return err
}

// delegate gives the cgroups to the user, as systemd's delegation does: each directory
// and its cgroup.procs, cgroup.threads and cgroup.subtree_control.
func (r *rootlessState) delegate(dirs ...string) error {
	for _, p := range dirs {
		for _, f := range []string{"", "cgroup.procs", "cgroup.threads", "cgroup.subtree_control"} {
			if err := os.Chown(filepath.Join(p, f), int(r.uid), int(r.gid)); err != nil {
				return fmt.Errorf("WithRootless: delegate %s: %w", p, err)
			}
		}
	}
	return nil
}

// rootlessCommand runs containerd as the user in new user and mount namespaces:
// unshare(1) maps the user to root and its subordinate ids (newuidmap), then the shell
// mounts a private tmpfs on /run/containerd, where runc's and the shims' default state
// directories are (rootlesskit copies /run up into a writable tmpfs the same way; the
// rest of /run, the daemon's base among it, stays visible) and execs containerd.
func (d *Daemon) rootlessCommand() *exec.Cmd {
	r := d.variant.rootless
	script := `mount -t tmpfs -o mode=0755 tmpfs /run/containerd && exec "$@"`
	if d.variant.legacyCgroups && HybridCgroups() {
		// The user cannot unmount the cgroup2 hierarchy (a mount its namespace inherited
		// is locked to it), but it may cover it: with an empty tmpfs there, crun 1.8
		// finds a legacy layout instead of the hybrid one it refuses.
		script = `mount -t tmpfs -o mode=0755 tmpfs ` + UnifiedCgroupMount + ` && ` + script
	}
	cmd := exec.Command("unshare", "--user", "--map-root-user", "--map-auto", "--mount", "--propagation", "private", "--",
		"/bin/sh", "-c", script, "sh", d.Containerd, "--config", d.ConfigPath)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: r.uid, Gid: r.gid, Groups: []uint32{}}}
	if r.cgroupFD != nil {
		cmd.SysProcAttr.UseCgroupFD = true
		cmd.SysProcAttr.CgroupFD = int(r.cgroupFD.Fd())
	}
	return cmd
}

// removeRootless undoes delegateCgroup once the daemon and everything it started are gone.
func (d *Daemon) removeRootless() error {
	r := d.variant.rootless
	if r == nil || r.cgroup == "" {
		return nil
	}
	if r.cgroupFD != nil {
		r.cgroupFD.Close()
	}
	return RemoveCgroup(r.cgroup)
}

// rootlessCtrCmd runs ctr as a rootless daemon's users run it (rootlesskit's nsenter, or
// nerdctl): see RootlessCmd. ctr 1.6 mounts a snapshot to read the image's /etc/group, and
// its FIFOs must be where the shims can open them.
func (d *Daemon) rootlessCtrCmd(ctx context.Context, args []string) *exec.Cmd {
	return d.RootlessCmd(ctx, append([]string{d.CtrPath}, args...)...)
}

// RootlessCmd builds a command that runs argv as the user of a WithRootless daemon inside
// the daemon's user and mount namespaces, where the user is root and sees the daemon's
// private /run/containerd (the shims' sockets): the way rootlesskit's `nsenter` has an
// operator reach a rootless containerd and its shims.
func (d *Daemon) RootlessCmd(ctx context.Context, argv ...string) *exec.Cmd {
	r := d.variant.rootless
	cmd := exec.CommandContext(ctx, "nsenter", append([]string{"--target", strconv.Itoa(d.Pid()), "--user", "--mount", "--"}, argv...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: r.uid, Gid: r.gid, Groups: []uint32{}}}
	return cmd
}

// RootlessInstall copies the executable src into the daemon's directory as dir/name,
// owned by the user of a WithRootless daemon, and returns its path.
func (d *Daemon) RootlessInstall(src, dir, name string) (string, error) {
	r := d.variant.rootless
	dst := filepath.Join(d.Base, dir)
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return "", err
	}
	dst = filepath.Join(dst, name)
	if err := copyFile(src, dst, 0o755); err != nil {
		return "", err
	}
	return dst, chownTree(filepath.Dir(dst), int(r.uid), int(r.gid))
}

// chownTree gives dir and everything below it to uid:gid.
func chownTree(dir string, uid, gid int) error {
	return filepath.Walk(dir, func(p string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, uid, gid)
	})
}
