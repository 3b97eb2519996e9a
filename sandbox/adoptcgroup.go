package sandbox

import (
	"log/slog"

	"github.com/example/containerd-shim-example-v2/holder"
)

// giveCgroup moves the holder of a running pod handed over without a
// cgroup into the one a pod started by this binary gets (holderCgroup).
// Binaries before 2026-12-04 left the holder of a pod without a cgroup
// parent in the shim's own cgroup; such a pod has no statistics
// (SandboxMetrics answers NotFound), and containerd's CRI then fails
// ListPodSandboxStats for every pod of the node until the pod is
// recreated. The cgroup is recorded before it is made, as at start, so
// that ShutdownSandbox, or `delete` after a crash, removes it. Best
// effort: a failure is logged and the pod serves on without one.
// Called from Import, before the pod is shared.
func (s *Service) giveCgroup(p *pod) {
	cg := s.holderCgroup(p.cfg, p.id)
	if cg == "" || p.holder == nil {
		return
	}
	p.files.rec.Cgroup = cg
	if err := p.files.save(); err != nil {
		p.files.rec.Cgroup = ""
		slog.Warn("a handed-over pod without a cgroup keeps none", "sandbox", p.id, "error", err)
		return
	}
	if err := holder.CreateCgroup(holder.CgroupRoot, cg); err != nil {
		slog.Warn("a handed-over pod without a cgroup keeps none", "sandbox", p.id, "cgroup", cg, "error", err)
		return
	}
	if err := holder.JoinCgroup(holder.CgroupRoot, cg, p.holder.Pid); err != nil {
		// A holder that died during the switch is a zombie, which cannot move.
		slog.Warn("a handed-over pod's holder cannot join its cgroup", "sandbox", p.id, "cgroup", cg, "error", err)
		return
	}
	p.cgroup = cg
}
