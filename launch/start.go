package launch

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	bundlefiles "github.com/example/containerd-shim-example-v2/bundle"
	"github.com/example/containerd-shim-example-v2/cgroup"
	"github.com/example/containerd-shim-example-v2/internal/oomscore"
	"github.com/example/containerd-shim-example-v2/internal/selftrim"
	"github.com/example/containerd-shim-example-v2/service"
)

// Annotations that put several containers into one shim daemon, in order of
// precedence: our own group, the stock runc shim's, then the CRI pod
// (sandbox) id, as the stock shim takes its own and CRI's.
const (
	GroupAnnotation      = "io.example.v2.group"
	StockGroupAnnotation = "io.containerd.runc.v2.group"
	SandboxAnnotation    = "io.kubernetes.cri.sandbox-id"
)

// stockGroupDomain sets a group named by the stock shim's annotation apart
// in the socket's hash. Unmarked, its socket would be the one the stock shim
// computes for the same group, and containers of the two runtimes that carry
// it would meet whichever daemon came first: ours would run under the stock
// shim, or the stock shim's under ours. The other annotations cannot meet a
// stock daemon: our own is ours alone, and a CRI pod has one runtime.
const stockGroupDomain = StockGroupAnnotation + "="

// maxStartInput caps what `start` reads from stdin; runtime options and
// bootstrap parameters are a few hundred bytes.
const maxStartInput = 4 << 20

// Start runs the `start` action: it finds or spawns the daemon that serves
// this task's group, writes <bundle>/address and prints the answer containerd
// expects. It prints nothing else on success: containerd reads stdout and
// stderr together as the answer.
func Start(f Flags, stdin io.Reader, stdout io.Writer) (retErr error) {
	if err := checkTask(f); err != nil {
		return fmt.Errorf("start: %w", err)
	}
	bundle, err := os.Getwd()
	if err != nil {
		return fmt.Errorf("bundle (working directory): %w", err)
	}
	data, err := io.ReadAll(io.LimitReader(stdin, maxStartInput))
	if err != nil {
		return fmt.Errorf("read stdin: %w", err)
	}
	in := DecodeStartInput(data, f.ID, f.Namespace)

	dir := DefaultSocketDir
	if in.Bootstrap != nil && in.Bootstrap.GetSocketDir() != "" {
		dir = in.Bootstrap.GetSocketDir()
	}
	b, err := readBundle(bundle, f.ID)
	if err != nil {
		return fmt.Errorf("start: %w", err)
	}
	path, l, err := daemonSocket(dir, f.Address, f.Namespace, f.ID, b)
	if err != nil && !errors.Is(err, ErrDaemonRunning) {
		return err
	}
	if l != nil {
		defer l.Close() // the daemon holds its own copy
	}
	address := SocketAddress(path)
	answer, aerr := ChooseAnswer(in, os.Getenv("MAX_SHIM_VERSION"), os.Getenv(TaskAPIEnv), address).Encode()
	if aerr != nil {
		if l != nil {
			os.Remove(path)
		}
		return aerr
	}
	if errors.Is(err, ErrDaemonRunning) {
		// Another container of the group already has a daemon: reuse it.
		if err := bundlefiles.WriteAddress(bundle, address); err != nil {
			return err
		}
		_, err = stdout.Write(answer)
		return err
	}
	defer func() {
		if retErr != nil {
			os.Remove(path)
		}
	}()
	if err := bundlefiles.WriteAddress(bundle, address); err != nil {
		return err
	}
	lf, err := l.File()
	if err != nil {
		return fmt.Errorf("listener file: %w", err)
	}
	defer lf.Close()

	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find own executable: %w", err)
	}
	args := []string{"-namespace", f.Namespace, "-id", f.ID, "-address", f.Address, "-socket", path}
	if f.Debug {
		args = append(args, "-debug")
	}
	shimCg := shimCgroup(in)
	if b.hasSpec && shimCg == "" {
		// A container is to be created and nothing will move the daemon:
		// it may warm the cgroup migration lock with one of its threads at
		// once (RunDaemon).
		args = append(args, "-warm-cgroups")
	}
	if err := enableCoreScheduling(); err != nil {
		return err
	}
	// The daemon's runtime starts with huge pages off, until it has marked
	// its BSS (selftrim.NoHugePages); this short-lived process needs none.
	selftrim.DisableTHPForExec()
	pid, err := spawnDaemon(self, args, bundle, daemonEnv(os.Environ()), lf)
	if err != nil {
		return fmt.Errorf("spawn shim daemon: %w", err)
	}
	defer func() {
		if retErr != nil {
			_ = unix.Kill(pid, unix.SIGKILL)
			_, _ = unix.Wait4(pid, nil, 0, nil)
		}
	}()
	if shimCg != "" {
		if err := cgroup.AddProcess(cgroup.DefaultRoot, shimCg, pid); err != nil {
			return err
		}
	}
	if err := adjustOOMScore(pid); err != nil {
		return err
	}
	_, err = stdout.Write(answer)
	return err
}

// spawnDaemon starts the daemon binary in dir: a process group of its own,
// so that signals meant for containerd's group (a ^C in a terminal running
// containerd) do not reach it; /dev/null for its stdio, since containerd
// reads start's stdout and stderr until every holder has closed them; the
// listener as fd 3. It calls syscall.StartProcess, not os/exec: the first
// start through os/exec in a process checks pidfd support by forking and
// reaping a throwaway child, which `start`, on the path of every new shim,
// would pay for a handle it never uses.
func spawnDaemon(self string, args []string, dir string, env []string, listener *os.File) (int, error) {
	null, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	if err != nil {
		return 0, err
	}
	defer null.Close()
	keepInheritedOut()
	pid, _, err := syscall.StartProcess(self, append([]string{self}, args...), &syscall.ProcAttr{
		Dir:   dir,
		Env:   env,
		Files: []uintptr{null.Fd(), null.Fd(), null.Fd(), listener.Fd()},
		Sys:   &syscall.SysProcAttr{Setpgid: true},
	})
	return pid, err
}

// keepInheritedOut marks every descriptor past stdio close-on-exec before
// the daemon is spawned. The shim's own are already; one `start` inherited
// without the flag from whoever ran it (containerd marks its own, a tool or
// a shell may not) would otherwise pass to the daemon and from there to
// every runtime, hook and container process it starts, for the daemon's
// whole life. close_range(2) needs Linux 5.11; before, each open
// descriptor is marked.
func keepInheritedOut() {
	if unix.CloseRange(3, math.MaxUint32, unix.CLOSE_RANGE_CLOEXEC) == nil {
		return
	}
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return
	}
	for _, e := range entries {
		if fd, err := strconv.Atoi(e.Name()); err == nil && fd > 2 {
			_, _ = unix.FcntlInt(uintptr(fd), unix.F_SETFD, unix.FD_CLOEXEC)
		}
	}
}

// pidtypePGID is the kernel's PIDTYPE_PGID: a core-scheduling cookie for a
// whole process group.
const pidtypePGID = 2

// enableCoreScheduling honours containerd's sched_core setting, which it
// passes as SCHED_CORE in the environment, as runc-v2 does: a new
// core-scheduling cookie for this process group (containerd starts `start`
// as a group leader), inherited by the daemon and everything it forks, so a
// shim's containers never share a core's SMT siblings with other shims'
// processes. A kernel without core scheduling fails the start: the operator
// asked for the isolation.
func enableCoreScheduling() error {
	if os.Getenv("SCHED_CORE") == "" {
		return nil
	}
	if err := unix.Prctl(unix.PR_SCHED_CORE, unix.PR_SCHED_CORE_CREATE, 0, pidtypePGID, 0); err != nil {
		return fmt.Errorf("enable core scheduling (SCHED_CORE is set): %w", err)
	}
	return nil
}

// shimCgroup is the cgroup the task's runtime options name for the new
// daemon (ShimCgroup; "" for none), as runc-v2 has it, so an operator can
// account shims apart from containerd. Options that do not decode are left
// for Create to report.
func shimCgroup(in StartInput) string {
	opts, err := service.DecodeOptions(in.Options)
	if err != nil {
		return ""
	}
	return opts.ShimCgroup
}

// bundleInfo is what `start` reads of a bundle's config.json.
type bundleInfo struct {
	// group is the task's group (the first grouping annotation, marked
	// with its domain where it has one, or the task's own id).
	group string
	// announce: a daemon found running for the group is told that the
	// task is coming (listenOrJoin), since whatever else it serves may be
	// deleted meanwhile: the other tasks of a group annotation's group, or
	// a task of the same id that is just leaving. Not for a CRI pod: CRI
	// removes a pod's sandbox, and so its daemon, only after its
	// containers, and creates none in a pod being removed.
	announce bool
	// hasSpec: there is a config.json at all. A task's bundle has one; a
	// pod's bundle under the Sandbox API (sandboxer = "shim") has none, and
	// its CreateSandbox runs no runtime, so a warming there would only hold
	// the kernel's cgroup lock (cgroup_mutex with it) while the pod's cgroup
	// is made.
	hasSpec bool
}

// readBundle reads a bundle's config.json once for `start`.
//
// A group must be one path element: the daemon's socket is named after a
// hash of the cleaned path <address>/<namespace>/<group>, so a group of
// "../<other namespace>/<id>" would share that namespace's daemon.
func readBundle(bundle, id string) (bundleInfo, error) {
	data, err := os.ReadFile(filepath.Join(bundle, "config.json"))
	if err != nil {
		return bundleInfo{group: id, announce: true}, nil
	}
	var spec struct {
		Annotations map[string]string `json:"annotations"`
	}
	if json.Unmarshal(data, &spec) != nil {
		return bundleInfo{group: id, announce: true, hasSpec: true}, nil
	}
	for _, a := range []struct {
		key, domain string
		announce    bool
	}{{GroupAnnotation, "", true}, {StockGroupAnnotation, stockGroupDomain, true}, {SandboxAnnotation, "", false}} {
		if g := spec.Annotations[a.key]; g != "" {
			if !onePathElement(g) {
				return bundleInfo{}, fmt.Errorf("annotation %s=%q: a group must be one path element", a.key, g)
			}
			return bundleInfo{group: a.domain + g, announce: a.announce, hasSpec: true}, nil
		}
	}
	return bundleInfo{group: id, announce: true, hasSpec: true}, nil
}

// adjustOOMScore makes the daemon slightly more killable than containerd
// (containerd's score + 1): under memory pressure a shim should go before the
// daemon that manages every shim. Lowering a score needs CAP_SYS_RESOURCE,
// which root may lack; that case is not an error.
func adjustOOMScore(pid int) error {
	score, err := oomscore.Of(os.Getppid())
	if err != nil {
		return nil // containerd already gone or no procfs: keep the default
	}
	err = oomscore.Set(pid, score+1)
	if err != nil && !errors.Is(err, os.ErrPermission) && !errors.Is(err, syscall.EACCES) {
		return fmt.Errorf("set shim oom_score_adj: %w", err)
	}
	return nil
}

// daemonEnv is the daemon's environment: start's own, with the Go heap kept
// off transparent huge pages (GODEBUG=disablethp=1). A shim lives as long as
// its pod and idles almost all of that time; on nodes whose kernel backs
// anonymous memory with huge pages by default ("always", Debian's setting),
// its few MiB of heap would otherwise hold whole 2 MiB pages (measured in the
// cgroup v2 lane's guest: 7.5 MiB anonymous instead of 3.3). Unlike
// prctl(PR_SET_THP_DISABLE), the setting reaches no container: the runtimes
// the daemon starts give containers the environment of their spec.
func daemonEnv(env []string) []string {
	out := make([]string, 0, len(env)+1)
	godebug := "disablethp=1"
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "GODEBUG="); ok {
			if v != "" {
				godebug = v + "," + godebug
			}
			continue
		}
		out = append(out, kv)
	}
	return append(out, "GODEBUG="+godebug)
}
