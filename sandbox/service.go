// Package sandbox serves containerd's Sandbox API: pods without pause
// containers.
//
// containerd 2.x's CRI plugin, for a runtime handler with sandboxer = "shim",
// makes the pod's network namespace and runs CNI, starts this shim for the
// pod and calls CreateSandbox (the PodSandboxConfig, the netns path) and
// StartSandbox, then SandboxStatus, Platform, SandboxMetrics and
// WaitSandbox while the pod lives, StopSandbox and ShutdownSandbox at the
// end. The pod's containers arrive as tasks on the same daemon (grouped by
// their sandbox-id annotation, or sent straight to its socket under task
// API v3).
//
// StartSandbox answers with the pid of the pod's namespace holder (package
// holder): CRI builds each container's namespace paths from it. Besides the
// holder, the shim makes what CRI's pause-container mode would: the pod's
// hostname, hosts and resolv.conf files and its /dev/shm, in the directories
// CRI mounts them from, and the holder's cgroup under the pod's cgroup parent.
// Nothing runs an OCI runtime for the pod itself.
//
// Errors carry errdefs classes (unknown sandbox: NotFound, duplicate:
// AlreadyExists, bad request: InvalidArgument, wrong state:
// FailedPrecondition); the service package turns them into wire codes.
package sandbox

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"

	"github.com/example/containerd-shim-example-v2/cgroup"
	"github.com/example/containerd-shim-example-v2/holder"
	"github.com/example/containerd-shim-example-v2/internal/identifier"
	"github.com/example/containerd-shim-example-v2/internal/leavegate"
	sandboxapi "github.com/example/containerd-shim-example-v2/proto/sandbox/v1"
	"github.com/example/containerd-shim-example-v2/reaper"
)

// Config wires the service to the daemon around it.
type Config struct {
	Reaper *reaper.Reaper
	// Warmer gives the runtime's cgroup migrations a head start (nil: none):
	// a started pod's first container follows within milliseconds.
	Warmer *cgroup.MigrationWarmer
	// Tasks counts the daemon's tasks (created, running, or not yet deleted).
	Tasks func() int
	// Idle is called after a ShutdownSandbox that left the daemon with no
	// sandbox and no task: the daemon may leave once containerd hangs up.
	Idle func()
	// Gate is the daemon's decision to leave, shared with the Task API:
	// CreateSandbox records its pod under it, so that a daemon that has
	// decided to leave refuses the pod rather than exit under it. Nil: a
	// gate of the service's own.
	Gate *leavegate.Gate
	// StopTimeout bounds StopSandbox's and ShutdownSandbox's wait for the
	// killed holder's exit (0: 10 s).
	StopTimeout time.Duration
	// Namespace is the daemon's containerd namespace. A pod without a cgroup
	// parent gets its holder the cgroup /<namespace>/<id>, where containerd's
	// default spec puts a pause container, and reports its statistics (empty:
	// such a holder stays in the shim's cgroup and the pod has none).
	Namespace string
}

// Service serves the Sandbox API for the pods of one shim daemon (one, when
// containerd starts it; the API does not forbid more).
//
// Locking: mu guards pods; it is held only for map access, and is taken
// inside the leave gate's lock (CreateSandbox), never around it.
type Service struct {
	cfg Config

	mu   sync.Mutex
	pods map[string]*pod

	// answersOwed is the WaitSandbox answers still being written for pods
	// already shut down (pod.leave, Handable).
	answersOwed atomic.Int32
}

func (s *Service) stopTimeout() time.Duration {
	if s.cfg.StopTimeout > 0 {
		return s.cfg.StopTimeout
	}
	return defaultStopTimeout
}

// New returns a Service.
func New(cfg Config) *Service {
	if cfg.Gate == nil {
		cfg.Gate = new(leavegate.Gate)
	}
	return &Service{cfg: cfg, pods: make(map[string]*pod)}
}

// Count returns how many sandboxes the daemon holds (in any state, until
// ShutdownSandbox).
func (s *Service) Count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.pods)
}

// Bundles lists the bundles of the pods the service holds.
func (s *Service) Bundles() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]string, 0, len(s.pods))
	for _, p := range s.pods {
		out = append(out, p.bundle)
	}
	return out
}

// HolderPid returns the pid of a running sandbox's holder.
func (s *Service) HolderPid(id string) (int, bool) {
	p, err := s.pod(id)
	if err != nil {
		return 0, false
	}
	st := p.status()
	return st.pid, st.pid > 0
}

func (s *Service) pod(id string) (*pod, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p, ok := s.pods[id]
	if !ok {
		return nil, fmt.Errorf("sandbox %q: %w", id, errdefs.ErrNotFound)
	}
	return p, nil
}

func invalid(format string, a ...any) error {
	return fmt.Errorf(format+": %w", append(a, errdefs.ErrInvalidArgument)...)
}

// CreateSandbox checks a pod's request and records it. Nothing is made yet:
// a refused request leaves nothing behind.
func (s *Service) CreateSandbox(ctx context.Context, r *sandboxapi.CreateSandboxRequest) (*sandboxapi.CreateSandboxResponse, error) {
	id := r.GetSandboxId()
	if !identifier.Valid(id) {
		return nil, invalid("sandbox id %q is not a valid identifier", id)
	}
	if err := checkBundle(r.GetBundlePath()); err != nil {
		return nil, err
	}
	cfg, err := ParsePodConfig(r.GetOptions().GetTypeUrl(), r.GetOptions().GetValue())
	if err != nil {
		return nil, err
	}
	// A client other than CRI sends no options; a network namespace it
	// names is the pod's network (without one, the node's).
	if len(r.GetOptions().GetValue()) == 0 && r.GetOptions().GetTypeUrl() == "" && r.GetNetnsPath() != "" {
		cfg.Network = ModePod
	}
	if err := checkPod(cfg, r.GetNetnsPath()); err != nil {
		return nil, fmt.Errorf("sandbox %s: %w", id, err)
	}
	err = s.cfg.Gate.Admit(func() error {
		s.mu.Lock()
		defer s.mu.Unlock()
		if _, ok := s.pods[id]; ok {
			return fmt.Errorf("sandbox %q: %w", id, errdefs.ErrAlreadyExists)
		}
		for other, p := range s.pods {
			if sameDir(p.bundle, r.GetBundlePath()) {
				return invalid("bundle %s is already sandbox %q's", r.GetBundlePath(), other)
			}
		}
		s.pods[id] = newPod(id, r.GetBundlePath(), cfg, r.GetNetnsPath(), s.holderCgroup(cfg, id), s.cfg.Reaper)
		return nil
	})
	if errors.Is(err, leavegate.ErrLeaving) {
		return nil, fmt.Errorf("sandbox %q: %w", id, err)
	}
	if err != nil {
		return nil, err
	}
	slog.Debug("sandbox created", "sandbox", id, "netns", r.GetNetnsPath(), "cgroupParent", cfg.CgroupParent)
	return &sandboxapi.CreateSandboxResponse{}, nil
}

// holderCgroup is the cgroup a pod's holder is born in: <parent>/<id>, or
// without a parent the one containerd's default spec gives a pause container
// (/<namespace>/<id>); empty without either.
func (s *Service) holderCgroup(cfg PodConfig, id string) string {
	switch {
	case cfg.CgroupParent != "":
		return holder.CgroupPath(cfg.CgroupParent, id)
	case s.cfg.Namespace != "":
		return path.Join("/", s.cfg.Namespace, id)
	}
	return ""
}

// sameDir reports whether a and b name one directory: the same path, or
// one a symlink (or a bind mount) leads to, whose pod record (sandbox.json)
// two pods would otherwise share.
func sameDir(a, b string) bool {
	if a == b {
		return true
	}
	sa, err1 := os.Stat(a)
	sb, err2 := os.Stat(b)
	return err1 == nil && err2 == nil && os.SameFile(sa, sb)
}

// checkBundle accepts a clean absolute directory, as the task service does.
func checkBundle(b string) error {
	if b == "" || !filepath.IsAbs(b) || filepath.Clean(b) != b {
		return invalid("bundle %q must be a clean absolute path", b)
	}
	st, err := os.Stat(b)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("bundle %s does not exist: %w", b, errdefs.ErrNotFound)
	case err != nil:
		return invalid("bundle %s: %v", b, err)
	case !st.IsDir():
		return invalid("bundle %s is not a directory", b)
	}
	return nil
}

// checkPod refuses what the shim cannot give a pod, before anything is made.
func checkPod(cfg PodConfig, netns string) error {
	if cfg.HasUserns && cfg.UsernsMode == ModePod {
		return fmt.Errorf("pods with a user namespace of their own are not supported by this shim's sandbox mode (use the podsandbox sandboxer): %w", errdefs.ErrNotImplemented)
	}
	switch {
	case cfg.Network == ModeNode && netns != "":
		return invalid("a host-network pod was given network namespace %s", netns)
	case cfg.Network != ModeNode && cfg.Network != ModePod:
		return invalid("network namespace mode %d: a pod's network is the pod's or the node's", cfg.Network)
	case cfg.Network == ModePod && netns == "":
		return invalid("no network namespace path for a pod with a network of its own")
	case cfg.Network == ModePod:
		if err := checkNetNS(netns); err != nil {
			return err
		}
	}
	for name := range cfg.Sysctls {
		if err := holder.CheckSysctl(name, cfg.Network != ModeNode, cfg.IPC != ModeNode, cfg.Network != ModeNode); err != nil {
			return err
		}
	}
	if len(cfg.Hostname) > hostNameMax {
		return invalid("hostname of %d bytes: at most %d", len(cfg.Hostname), hostNameMax)
	}
	return nil
}

// hostNameMax is the longest hostname the kernel takes (HOST_NAME_MAX).
const hostNameMax = 64

// nsfsMagic is the filesystem magic of namespace files (NSFS_MAGIC).
const nsfsMagic = 0x6e736673

// checkNetNS requires path to be a network namespace (CRI's mounted pin).
func checkNetNS(path string) error {
	if !filepath.IsAbs(path) {
		return invalid("network namespace %q is not an absolute path", path)
	}
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("network namespace %s does not exist: %w", path, errdefs.ErrNotFound)
		}
		return invalid("network namespace %s: %v", path, err)
	}
	if st.Type != nsfsMagic {
		return invalid("%s is not a namespace (not mounted from nsfs)", path)
	}
	// Another kind of namespace (a pid or uts pin) would fail only at
	// StartSandbox, in the holder's setns, with a bare EINVAL.
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return invalid("network namespace %s: %v", path, err)
	}
	defer unix.Close(fd)
	kind, err := unix.IoctlRetInt(fd, nsGetNSType)
	switch {
	case errors.Is(err, unix.ENOTTY):
		// A kernel before 4.11 cannot say; setns will.
	case err != nil:
		return invalid("network namespace %s: %v", path, err)
	case kind != unix.CLONE_NEWNET:
		return invalid("%s is a namespace of another kind (%#x), not a network namespace", path, kind)
	}
	return nil
}

// nsGetNSType is the NS_GET_NSTYPE ioctl (_IO(0xb7, 0x3)): the kind of a
// namespace file, as its CLONE_NEW* flag.
const nsGetNSType = 0xb703

// StartSandbox makes the pod's files and cgroup and starts its holder.
func (s *Service) StartSandbox(ctx context.Context, r *sandboxapi.StartSandboxRequest) (*sandboxapi.StartSandboxResponse, error) {
	p, err := s.pod(r.GetSandboxId())
	if err != nil {
		return nil, err
	}
	began := time.Now()
	h, err := p.start()
	if err != nil {
		return nil, fmt.Errorf("start sandbox %s: %w", p.id, err)
	}
	if cg := p.cgroup; cg != "" {
		// CRI creates and starts the pod's first container next, and runc
		// will move its init into a cgroup: the kernel's wait for that can
		// begin now, while CRI prepares the container. The holder's pid is
		// the one just started, not the pod's status (which says 0 once
		// the holder is gone): it cannot have been reused by then, pids
		// are handed out in turn.
		s.cfg.Warmer.Kick(func() error { return cgroup.AddProcess(holder.CgroupRoot, cg, h.Pid) })
	}
	slog.Debug("sandbox started", "sandbox", p.id, "holder", h.Pid, "took", time.Since(began))
	return &sandboxapi.StartSandboxResponse{Pid: uint32(h.Pid), CreatedAt: timestamp(h.Started)}, nil
}

// Platform is the node's: the pod's processes run on this kernel.
func (s *Service) Platform(ctx context.Context, r *sandboxapi.PlatformRequest) (*sandboxapi.PlatformResponse, error) {
	if _, err := s.pod(r.GetSandboxId()); err != nil {
		return nil, err
	}
	return &sandboxapi.PlatformResponse{Platform: &sandboxapi.Platform{Os: runtime.GOOS, Architecture: runtime.GOARCH, Variant: archVariant()}}, nil
}

// UpdateSandbox accepts containerd's new record of a pod the shim knows.
// containerd 2.4 sends it after CRI's UpdatePodSandboxResources (kubelet's
// pod-level resize), with the new pod resources in the record's extensions
// (2.2 and 2.3 take the call but do not pass it on).
// There is nothing for the shim to apply: the pod's cgroup is its cgroup
// parent, which kubelet resizes itself, and the holder's cgroup below it has
// no limits of its own, as a pause container's has none (containerd's own
// pause-container controller does nothing on Update either). Nor does the
// shim keep anything of the record (labels, spec, extensions) that could go
// stale. Answering, rather than leaving the method out, gives an unknown pod
// NotFound, as every other call does.
func (s *Service) UpdateSandbox(ctx context.Context, r *sandboxapi.UpdateSandboxRequest) (*sandboxapi.UpdateSandboxResponse, error) {
	p, err := s.pod(r.GetSandboxId())
	if err != nil {
		return nil, err
	}
	slog.Debug("sandbox record updated; nothing to apply", "sandbox", p.id, "fields", r.GetFields())
	return &sandboxapi.UpdateSandboxResponse{}, nil
}

// StopSandbox ends the pod's holder (its containers are stopped by then).
// The timeout is not needed: a holder has nothing to save.
func (s *Service) StopSandbox(ctx context.Context, r *sandboxapi.StopSandboxRequest) (*sandboxapi.StopSandboxResponse, error) {
	p, err := s.pod(r.GetSandboxId())
	if err != nil {
		return nil, err
	}
	if err := p.stop(s.stopTimeout()); err != nil {
		return nil, err
	}
	return &sandboxapi.StopSandboxResponse{}, nil
}

// WaitSandboxLater answers WaitSandbox once the pod has stopped, with its
// holder's exit, without a goroutine parked until then (the daemon's server
// calls it; see service.RegisterSandbox). CRI keeps one open for every pod's
// life. abandon withdraws it when containerd hangs up first.
func (s *Service) WaitSandboxLater(r *sandboxapi.WaitSandboxRequest, answer func(*sandboxapi.WaitSandboxResponse, error)) (abandon func()) {
	p, err := s.pod(r.GetSandboxId())
	if err != nil {
		answer(nil, err)
		return nil
	}
	return p.onDone(func() {
		st := p.status()
		answer(&sandboxapi.WaitSandboxResponse{ExitStatus: st.exitStatus, ExitedAt: timestamp(st.exitedAt)}, nil)
	})
}

// SandboxStatus reports the pod's state (SANDBOX_READY while its holder
// runs) and the holder's pid.
func (s *Service) SandboxStatus(ctx context.Context, r *sandboxapi.SandboxStatusRequest) (*sandboxapi.SandboxStatusResponse, error) {
	p, err := s.pod(r.GetSandboxId())
	if err != nil {
		return nil, err
	}
	st := p.status()
	resp := &sandboxapi.SandboxStatusResponse{
		SandboxId: p.id,
		Pid:       uint32(st.pid),
		State:     st.state,
		CreatedAt: timestamp(st.createdAt),
	}
	if st.phase == phaseStopped {
		resp.ExitedAt = timestamp(st.exitedAt)
	}
	if r.GetVerbose() {
		resp.Info = map[string]string{
			"phase":        st.phase.String(),
			"holderPid":    fmt.Sprint(st.pid),
			"netns":        p.netns,
			"cgroupParent": p.cfg.CgroupParent,
		}
	}
	return resp, nil
}

// PingSandbox answers for a pod the shim knows.
func (s *Service) PingSandbox(ctx context.Context, r *sandboxapi.PingRequest) (*sandboxapi.PingResponse, error) {
	if _, err := s.pod(r.GetSandboxId()); err != nil {
		return nil, err
	}
	return &sandboxapi.PingResponse{}, nil
}

// ShutdownSandbox stops the pod and removes everything it made; the daemon
// may leave afterwards if it serves nothing else. An unknown pod is NotFound,
// and also lets an empty daemon leave: containerd shuts a sandbox down after
// a CreateSandbox it refused, and the shim it started for it must not stay.
func (s *Service) ShutdownSandbox(ctx context.Context, r *sandboxapi.ShutdownSandboxRequest) (*sandboxapi.ShutdownSandboxResponse, error) {
	defer s.leaveIfIdle()
	p, err := s.pod(r.GetSandboxId())
	if err != nil {
		return nil, err
	}
	if err := p.shutdown(s.stopTimeout()); err != nil {
		return nil, fmt.Errorf("shut down sandbox %s: %w", p.id, err)
	}
	s.mu.Lock()
	if s.pods[p.id] == p { // not a pod created since under the same id
		delete(s.pods, p.id)
	}
	s.mu.Unlock()
	p.leave(&s.answersOwed)
	slog.Debug("sandbox shut down", "sandbox", p.id)
	return &sandboxapi.ShutdownSandboxResponse{}, nil
}

func (s *Service) leaveIfIdle() {
	if s.Count() == 0 && (s.cfg.Tasks == nil || s.cfg.Tasks() == 0) && s.cfg.Idle != nil {
		s.cfg.Idle()
	}
}

// SandboxMetrics reports the pod's cgroup (its cgroup parent: holder and
// containers together), as CRI's pause-container mode does; without a parent,
// the holder's own cgroup, as that mode reports the pause container's. A
// failed answer fails CRI's ListPodSandboxStats for every pod of the node.
func (s *Service) SandboxMetrics(ctx context.Context, r *sandboxapi.SandboxMetricsRequest) (*sandboxapi.SandboxMetricsResponse, error) {
	p, err := s.pod(r.GetSandboxId())
	if err != nil {
		return nil, err
	}
	cgPath := p.cgroup
	if p.cfg.CgroupParent != "" {
		cgPath = expandParent(p.cfg.CgroupParent)
	}
	if cgPath == "" {
		return nil, fmt.Errorf("sandbox %s has no cgroup: %w", p.id, errdefs.ErrNotFound)
	}
	cg, err := p.metricsCgroup(holder.CgroupRoot, cgPath)
	if err != nil {
		return nil, fmt.Errorf("sandbox %s: %w", p.id, err)
	}
	data, typeURL, err := cg.Metrics()
	if err != nil {
		return nil, fmt.Errorf("stats of sandbox %s: %w", p.id, err)
	}
	return &sandboxapi.SandboxMetricsResponse{Metrics: &sandboxapi.Metric{
		Timestamp: timestamp(time.Now()),
		Id:        p.id,
		Data:      &sandboxapi.Any{TypeUrl: typeURL, Value: data},
	}}, nil
}

// expandParent is the cgroupfs path of a pod's cgroup parent.
func expandParent(parent string) string {
	return filepath.Dir(holder.CgroupPath(parent, "x"))
}

func timestamp(t time.Time) *sandboxapi.Timestamp {
	if t.IsZero() {
		return nil
	}
	return &sandboxapi.Timestamp{Seconds: t.Unix(), Nanos: int32(t.Nanosecond())}
}

// archVariant is the platform variant containerd names for this build's
// architecture (arm64: v8; none for amd64).
func archVariant() string {
	if runtime.GOARCH == "arm64" {
		return "v8"
	}
	return ""
}
