// Package holder is a pod's namespace holder: the one small process whose
// namespaces are the pod's, standing in for the pause container when the shim
// serves containerd's Sandbox API.
//
// CRI builds every container's namespace paths from the sandbox's pid
// (/proc/<pid>/ns/{net,ipc,uts,pid}), so a pod needs a live process in those
// namespaces for as long as it exists. Start makes them on one locked OS
// thread of the shim (namespace changes of setns(2) and unshare(2) are per
// thread for these kinds): it enters the network namespace CRI prepared and
// CNI configured, unshares new UTS and IPC namespaces, sets the pod's
// hostname and sysctls there, and forks the holder from that thread (with a
// new PID namespace unless the pod uses the node's), so the
// child is born in all of them. The thread then returns to the shim's own
// namespaces.
//
// The holder program itself only waits: it watches a pipe whose other end
// the shim holds (EOF when the shim stops it or dies) and, as PID 1 of a
// shared PID namespace, lets no orphan stay a zombie. On x86-64 it is a
// 282-byte static executable the shim writes into a memfd (tiny_amd64.go),
// about 12 KiB resident; elsewhere it is this binary, re-executed with the
// hidden action Action (Main). No runtime, image or rootfs is involved: its
// root is an empty directory, entered first thing, and it runs as the pause
// container's user, 65535, with CAP_SYS_CHROOT alone (see holderUID).
package holder

import (
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"syscall"
	"time"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"

	"github.com/example/containerd-shim-example-v2/internal/oomscore"
	"github.com/example/containerd-shim-example-v2/reaper"
)

// Action is the hidden command-line action that runs the Go holder (Main),
// where there is no tiny one.
const Action = "pod-holder"

// goHolderOnly makes every holder the Go one (tests of Main on x86-64).
var goHolderOnly = false

// Child file descriptors (after stdin, stdout, stderr).
const (
	lifeFD    = 3 // read end of the life pipe: EOF means the shim is gone or wants the holder gone
	rootFD    = 4 // an empty directory, removed once the holder started: its root (fchdir, chroot(".")), then closed
	programFD = 5 // the tiny holder's executable (a memfd), exec'd as /proc/self/fd/5
)

// The holder's identity, as CRI gives the pause container (its image's
// user 65535, no capabilities; sandbox_run_linux.go): containers of a pod
// that shares its PID namespace see the holder as their PID 1, and one with
// CAP_SYS_PTRACE reaches whatever it can of that process through
// /proc/1/{root,cwd,fd} or ptrace. Run as root with every capability and the
// node's / as its root, it handed them the node's filesystem. It keeps
// CAP_SYS_CHROOT alone (ambient, across the exec), for its chroot into the
// empty directory at rootFD; after that it can do nothing a nobody cannot.
const (
	holderUID = 65535
	holderGID = 65535
)

// holderOOMScoreAdj is the holder's oom_score_adj, the pause container's
// (CRI's defaultSandboxOOMAdj): the OOM killer leaves the pod's namespaces
// alone while any other process is left to kill.
const holderOOMScoreAdj = -998

// Config describes the holder of one pod.
type Config struct {
	// ID names the pod (the sandbox id); it only appears on the holder's
	// command line, so operators can tell holders apart in ps.
	ID string
	// NetNS is the network namespace to be born in (a path CRI mounted, e.g.
	// /var/run/netns/cni-...); empty keeps the shim's (host network).
	NetNS string
	// New namespaces of the pod: IPC and UTS unless the pod uses the node's;
	// PID unless the pod uses the node's, as a pause container has.
	NewIPC, NewUTS, NewPID bool
	// Hostname is set in the pod's new UTS namespace; empty keeps the node's
	// name there, as a pause container's does.
	Hostname string
	// Sysctls are written in the pod's namespaces (see CheckSysctl).
	Sysctls map[string]string
	// Cgroup is the cgroup (a path under every hierarchy, like
	// "/kubepods/pod-x/<id>") the holder is moved into; empty leaves it in
	// the shim's. The caller creates it (CreateCgroup).
	Cgroup string
	// Reaper receives the holder's exit: the shim is its parent.
	Reaper *reaper.Reaper
	// UIDMappings and GIDMappings, when set, give the holder a user
	// namespace of its own with these mappings: not for a pod, but to hold
	// one while an ID-mapped mount is made from /proc/<pid>/ns/user.
	UIDMappings, GIDMappings []syscall.SysProcIDMap
}

// Holder is a running holder process, owned by the shim that started it.
type Holder struct {
	Pid     int
	Started time.Time

	life *os.File           // write end of the life pipe; closing it ends the holder
	exit <-chan reaper.Exit // the holder's exit, from the shim's reaper
}

// Start sets up the pod's namespaces and launches its holder, born in the
// pod's cgroup (see birth.go). On error nothing is left running (the
// namespaces die with the thread that made them).
func Start(cfg Config) (*Holder, error) {
	type result struct {
		f   forked
		err error
	}
	done := make(chan result, 1)
	go func() {
		// This goroutine's thread enters or makes the pod's namespaces (and,
		// under cgroup v1, its cgroups), and a thread in foreign namespaces
		// must never run other goroutines. It goes back to its own afterwards;
		// if that fails it stays locked, and Go retires it with the goroutine
		// (or, on the process's main thread, parks it for good).
		runtime.LockOSThread()
		home, err := currentHome(cfg.Cgroup != "")
		if err != nil {
			done <- result{err: err}
			return
		}
		defer home.close()
		f, err := start(cfg)
		// Home before answering: when Start returns, no thread of the shim
		// is left in the pod's namespaces or cgroups.
		if rerr := home.restore(); rerr != nil {
			slog.Warn("a pod holder's forking thread cannot return to the shim's namespaces or cgroups; it is retired", "error", rerr)
			done <- result{f, err}
			return
		}
		runtime.UnlockOSThread()
		done <- result{f, err}
	}()
	r := <-done
	if r.err != nil {
		return nil, r.err
	}
	h := r.f.holder
	setOOMScoreAdj(h.Pid)
	if err := r.f.rooted(h); err != nil {
		abandon(h, "took no empty root")
		return nil, err
	}
	if r.f.moveToCgroup {
		if err := JoinCgroup(CgroupRoot, cfg.Cgroup, h.Pid); err != nil {
			abandon(h, "could not join its cgroup")
			return nil, err
		}
	}
	return h, nil
}

// abandon stops a holder whose start failed after its fork. The wait keeps
// a failed start from leaving a holder behind; it is bounded so that a
// reaper that cannot deliver (paused, or a kernel slow to tear down the
// namespaces) does not hang the request. The exit, if it comes later, is
// reaped and dropped; one that came already was taken by rooted.
func abandon(h *Holder, why string) {
	h.Stop()
	select {
	case <-h.exit:
	case <-time.After(failedStartWait):
		slog.Warn("a pod holder that "+why+" was killed but not reaped in time", "pid", h.Pid, "wait", failedStartWait)
	}
}

// failedStartWait bounds Start's wait for a holder it killed after a failed
// start.
const failedStartWait = 10 * time.Second

// rootedWait bounds Start's wait for the holder to enter its empty root: the
// tiny holder does at once, the Go holder once its runtime started.
const rootedWait = 10 * time.Second

// forked is a holder just started, and whether it still has to be moved into
// its cgroup (a kernel without CLONE_INTO_CGROUP).
type forked struct {
	holder       *Holder
	moveToCgroup bool
	root         unix.Stat_t // the empty directory the holder is to make its root
}

// rooted waits until the holder's root is its empty directory: the holder
// enters it first thing, and one that cannot (a failed fchdir or chroot)
// exits at once, non-zero. Until Start returns no container can join the
// pod, so none ever sees a holder whose root is still the node's.
func (f forked) rooted(h *Holder) error {
	proc := fmt.Sprintf("/proc/%d/root", h.Pid)
	deadline := time.Now().Add(rootedWait)
	for pause := 50 * time.Microsecond; ; pause = min(2*pause, 5*time.Millisecond) {
		var st unix.Stat_t
		if err := unix.Stat(proc, &st); err == nil && st.Dev == f.root.Dev && st.Ino == f.root.Ino {
			return nil
		}
		select {
		case e := <-h.exit:
			h.exit = exitAgain(e)
			why := fmt.Sprintf("exited with status %d", e.Status)
			if e.Status > 128 && e.Status < 256 && e.Status != 128+int(unix.SIGKILL) {
				// The tiny holder's exit_group(-errno); the Go holder's
				// error went to the shim's log.
				why += fmt.Sprintf(" (%v?)", unix.Errno(256-e.Status))
			}
			return fmt.Errorf("start pod holder: it did not enter its empty root directory: %s", why)
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("start pod holder: it did not enter its empty root directory within %v", rootedWait)
		}
		time.Sleep(pause)
	}
}

// exitAgain is a channel that delivers e once more, for abandon.
func exitAgain(e reaper.Exit) <-chan reaper.Exit {
	c := make(chan reaper.Exit, 1)
	c <- e
	return c
}

// setOOMScoreAdj gives the holder the pause container's oom_score_adj. A
// shim not allowed to go below its own (no CAP_SYS_RESOURCE: the holder
// starts with the shim's) takes the lowest it may, the shim's own, as CRI's
// restrict_oom_score_adj does. A failure costs the pod only its protection
// from the OOM killer: logged, not fatal.
func setOOMScoreAdj(pid int) {
	err := oomscore.Set(pid, holderOOMScoreAdj)
	if errors.Is(err, unix.EACCES) || errors.Is(err, unix.EPERM) {
		var own int
		if own, err = oomscore.Of(os.Getpid()); err == nil {
			err = oomscore.Set(pid, max(holderOOMScoreAdj, own))
		}
	}
	if err != nil && !errors.Is(err, os.ErrNotExist) { // gone: rooted says why
		slog.Warn("cannot set a pod holder's oom_score_adj", "pid", pid, "error", err)
	}
}

// start runs on a locked OS thread: make the namespaces, fork the holder.
func start(cfg Config) (forked, error) {
	if cfg.NetNS != "" {
		ns, err := os.Open(cfg.NetNS)
		if err != nil {
			return forked{}, fmt.Errorf("open network namespace %s: %w", cfg.NetNS, notFoundIfMissing(err))
		}
		err = unix.Setns(int(ns.Fd()), unix.CLONE_NEWNET)
		ns.Close()
		if err != nil {
			return forked{}, fmt.Errorf("enter network namespace %s: %w", cfg.NetNS, err)
		}
	}
	var flags int
	if cfg.NewIPC {
		flags |= unix.CLONE_NEWIPC
	}
	if cfg.NewUTS {
		flags |= unix.CLONE_NEWUTS
	}
	if flags != 0 {
		if err := unix.Unshare(flags); err != nil {
			return forked{}, fmt.Errorf("new IPC/UTS namespaces for the pod: %w", err)
		}
	}
	if cfg.NewUTS && cfg.Hostname != "" {
		if err := unix.Sethostname([]byte(cfg.Hostname)); err != nil {
			if errors.Is(err, unix.EINVAL) { // longer than the kernel takes
				err = fmt.Errorf("%w: %w", err, errdefs.ErrInvalidArgument)
			}
			return forked{}, fmt.Errorf("set hostname %q: %w", cfg.Hostname, err)
		}
	}
	// sysctl files act on the namespaces of the thread that opens them:
	// this one's are the pod's now.
	for _, k := range slices.Sorted(maps.Keys(cfg.Sysctls)) {
		if err := writeSysctl(k, cfg.Sysctls[k]); err != nil {
			return forked{}, err
		}
	}
	var birth *birthCgroup
	if cfg.Cgroup != "" {
		var err error
		if birth, err = enterCgroup(CgroupRoot, cfg.Cgroup); err != nil {
			return forked{}, err
		}
		defer birth.close()
	}
	return fork(cfg, birth)
}

// fork starts the holder program from the calling (locked) thread, born in
// birth's cgroup when there is one.
func fork(cfg Config, birth *birthCgroup) (_ forked, retErr error) {
	lifeR, lifeW, err := os.Pipe()
	if err != nil {
		return forked{}, fmt.Errorf("holder pipe: %w", err)
	}
	defer lifeR.Close() // the holder has its copy
	defer func() {
		if retErr != nil {
			lifeW.Close()
		}
	}()
	root, rootDir, err := emptyRoot()
	if err != nil {
		return forked{}, err
	}
	defer rootDir.Close() // the holder has its copy
	var rootStat unix.Stat_t
	if err := unix.Fstat(int(rootDir.Fd()), &rootStat); err != nil {
		os.Remove(root)
		return forked{}, fmt.Errorf("holder root %s: %w", root, err)
	}
	// Removed as soon as the holder started (or failed to): it keeps the
	// directory by its descriptor, and a removed directory takes no new
	// entry, so its root stays empty.
	defer os.Remove(root)
	// What every attempt shares; startProgram adds the program.
	base := &exec.Cmd{
		Args: []string{shimName(), Action, cfg.ID},
		// The Go holder's runtime: one P, and no cgroup-aware
		// GOMAXPROCS, which would keep the cgroup's cpu.cfs_quota_us
		// (or cpu.max) open, for the pod's containers to reopen through
		// /proc/1/fd and write.
		Env:        []string{"GOMAXPROCS=1", "GODEBUG=containermaxprocs=0"},
		Dir:        "/",
		ExtraFiles: []*os.File{lifeR, rootDir},
		// No Pdeathsig: the kernel ties it to the forking thread, and this
		// thread ends right after the fork. The life pipe does that job.
		SysProcAttr: &syscall.SysProcAttr{},
	}
	if cfg.NewPID {
		base.SysProcAttr.Cloneflags = unix.CLONE_NEWPID
	}
	// CAP_SYS_CHROOT raised into the ambient set in the child, after its
	// setgroups([]), setgid and setuid (Go keeps the permitted set over the
	// setuid with PR_SET_KEEPCAPS for that) and before the exec: the
	// holder's program starts with that one capability and nothing else.
	base.SysProcAttr.AmbientCaps = []uintptr{unix.CAP_SYS_CHROOT}
	if len(cfg.UIDMappings) > 0 {
		// A holder of a user namespace (not a pod's: nothing joins its
		// PID namespace, and it lives only while an ID-mapped mount is
		// made) keeps the shim's ids, as before: the uid and gid 65535
		// may not be mapped in its namespace at all. Where the shim's uid
		// is not its namespace's root, the exec leaves it the ambient
		// capability alone there too, and the chroot needs it.
		base.SysProcAttr.Cloneflags |= unix.CLONE_NEWUSER
		base.SysProcAttr.UidMappings, base.SysProcAttr.GidMappings = cfg.UIDMappings, cfg.GIDMappings
	} else {
		base.SysProcAttr.Credential = &syscall.Credential{Uid: holderUID, Gid: holderGID, Groups: []uint32{}}
	}
	mem, err := tinyProgram()
	if err != nil {
		// A host may forbid executable memfds (vm.memfd_noexec=2): the Go
		// holder does the same job from the shim's own binary.
		slog.Info("tiny pod holder unavailable, using the Go holder", "error", err)
	}
	if mem != nil {
		defer mem.Close()
	}
	cmd, exit, moveAfter, err := startProgram(cfg.Reaper, base, mem, birth)
	if err != nil && mem != nil && execRefused(err) {
		// The memfd was made but its exec refused (an LSM, a noexec rule
		// this kernel applies at exec): fall back to the Go holder.
		slog.Info("tiny pod holder refused, using the Go holder", "error", err)
		cmd, exit, moveAfter, err = startProgram(cfg.Reaper, base, nil, birth)
	}
	if err != nil {
		return forked{}, fmt.Errorf("start pod holder: %w", err)
	}
	h := &Holder{Pid: cmd.Process.Pid, Started: time.Now(), life: lifeW, exit: exit}
	_ = cmd.Process.Release() // the reaper owns the wait
	return forked{holder: h, moveToCgroup: moveAfter, root: rootStat}, nil
}

// rootMode is the holder root's mode (a test's, to make it unusable).
var rootMode os.FileMode = 0o555

// emptyRoot makes the directory a holder makes its root, and opens it. It
// is searchable by all (0555): the holder enters it as uid 65535.
func emptyRoot() (string, *os.File, error) {
	dir, err := os.MkdirTemp("", "pod-holder-root-")
	if err != nil {
		return "", nil, fmt.Errorf("holder root: %w", err)
	}
	if err := os.Chmod(dir, rootMode); err != nil {
		os.Remove(dir)
		return "", nil, fmt.Errorf("holder root: %w", err)
	}
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		os.Remove(dir)
		return "", nil, fmt.Errorf("holder root: %w", err)
	}
	return dir, os.NewFile(uintptr(fd), dir), nil
}

// threadHome is what Start's thread changes and must get back: its own
// namespaces of the kinds Start changes, and under cgroup v1 its own cgroups
// in the hierarchies a holder joins.
type threadHome struct {
	namespaces []*os.File
	cgroups    []string // v1 cgroup directories, to move the thread back into
}

var threadNamespaceKinds = []string{"net", "uts", "ipc"}

// currentHome records the calling thread's namespaces, and its cgroups when
// the holder is to be born in a cgroup of its own.
func currentHome(withCgroups bool) (*threadHome, error) {
	home := &threadHome{}
	for _, kind := range threadNamespaceKinds {
		f, err := os.Open("/proc/thread-self/ns/" + kind)
		if err != nil {
			home.close()
			return nil, fmt.Errorf("the shim's own %s namespace: %w", kind, err)
		}
		home.namespaces = append(home.namespaces, f)
	}
	if withCgroups {
		dirs, err := threadCgroups(CgroupRoot)
		if err != nil {
			home.close()
			return nil, err
		}
		home.cgroups = dirs
	}
	return home, nil
}

// restore puts the calling thread back into its namespaces and cgroups.
func (h *threadHome) restore() error {
	for _, f := range h.namespaces {
		if err := unix.Setns(int(f.Fd()), 0); err != nil {
			return err
		}
	}
	for _, dir := range h.cgroups {
		if err := moveThread(dir); err != nil {
			return fmt.Errorf("back to cgroup %s: %w", dir, err)
		}
	}
	return nil
}

func (h *threadHome) close() {
	for _, f := range h.namespaces {
		f.Close()
	}
}

// shimName is the holder's argv[0]: the shim's own path, so `ps` shows
// "<shim> pod-holder <sandbox id>".
func shimName() string {
	if len(os.Args) > 0 && os.Args[0] != "" {
		return os.Args[0]
	}
	return "containerd-shim-example-v2"
}

// Exit delivers the holder's exit (once).
func (h *Holder) Exit() <-chan reaper.Exit { return h.exit }

// Stop ends the holder with SIGKILL, since a holder has nothing to save;
// with a PID namespace of its own, every process left in the pod's
// namespace dies with it. Stop is idempotent; the exit arrives on Exit, and
// it is always 128+SIGKILL, as for a pause container that CRI stops.
func (h *Holder) Stop() {
	// The pid is ours until the reaper has reaped it, and only Stop's caller
	// consumes Exit after calling Stop: no reuse race.
	_ = unix.Kill(h.Pid, unix.SIGKILL)
	// Only then the life pipe: closed first, the holder could see EOF and
	// exit 0 before the signal landed, and the pod's exit status would
	// depend on that race.
	if h.life != nil {
		h.life.Close()
		h.life = nil
	}
}

// notFoundIfMissing classes a missing path as errdefs.ErrNotFound.
func notFoundIfMissing(err error) error {
	if errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("%w: %w", err, errdefs.ErrNotFound)
	}
	return err
}
