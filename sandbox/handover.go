package sandbox

import (
	"fmt"
	"os"
	"sort"
	"time"

	"github.com/example/containerd-shim-example-v2/holder"
)

// An in-place upgrade of the shim (docs/upgrade.md) hands its pods to the
// next binary: their holders stay its children, their files, mounts and
// cgroups stay where they are; what the service knows of each goes over.

// State is the service's pods as handed over.
type State struct {
	Pods []PodState `json:"pods,omitempty"`
}

// PodState is one pod.
type PodState struct {
	ID         string        `json:"id"`
	Bundle     string        `json:"bundle"`
	Config     PodConfig     `json:"config"`
	Netns      string        `json:"netns"`
	Phase      int           `json:"phase"`
	Holder     *holder.State `json:"holder,omitempty"`
	Record     record        `json:"record"`
	CreatedAt  time.Time     `json:"createdAt"`
	ExitedAt   time.Time     `json:"exitedAt"`
	ExitStatus uint32        `json:"exitStatus"`
}

// FDKeeper keeps a duplicate of a file open across execve and says its
// number (handover.FDs).
type FDKeeper interface {
	KeepDup(f *os.File) (int, error)
}

// Export describes every pod. Requests are paused, so no start, stop or
// shutdown runs meanwhile; each pod's op lock makes sure.
func (s *Service) Export(fds FDKeeper) (*State, error) {
	s.mu.Lock()
	pods := make([]*pod, 0, len(s.pods))
	for _, p := range s.pods {
		pods = append(pods, p)
	}
	s.mu.Unlock()
	sort.Slice(pods, func(i, j int) bool { return pods[i].id < pods[j].id })
	st := &State{}
	for _, p := range pods {
		ps, err := p.export(fds)
		if err != nil {
			return nil, fmt.Errorf("sandbox %s: %w", p.id, err)
		}
		st.Pods = append(st.Pods, ps)
	}
	return st, nil
}

func (p *pod) export(fds FDKeeper) (PodState, error) {
	p.op.Lock()
	defer p.op.Unlock()
	p.mu.Lock()
	defer p.mu.Unlock()
	ps := PodState{ID: p.id, Bundle: p.bundle, Config: p.cfg, Netns: p.netns, Phase: int(p.phase), Record: p.files.rec,
		CreatedAt: p.createdAt, ExitedAt: p.exitedAt, ExitStatus: p.exitStatus}
	if p.phase == phaseRunning && p.holder != nil {
		hs, err := p.holder.Export(fds.KeepDup)
		if err != nil {
			return ps, err
		}
		ps.Holder = &hs
	}
	return ps, nil
}

// Import rebuilds handed-over pods and claims their holders' exits. Call it
// before the reaper runs: a holder that died during the switch waits as a
// zombie, and its pod is stopped once, here.
func (s *Service) Import(st State, adopt func(fd int, name string, pollable bool) (*os.File, error)) error {
	for _, ps := range st.Pods {
		// A started pod's holder is where its record says (an older
		// binary left a pod without a cgroup parent in the shim's: a
		// running one is given a cgroup below).
		cg := ps.Record.Cgroup
		if cg == "" && phase(ps.Phase) == phaseCreated {
			cg = s.holderCgroup(ps.Config, ps.ID)
		}
		p := newPod(ps.ID, ps.Bundle, ps.Config, ps.Netns, cg, s.cfg.Reaper)
		p.phase, p.files.rec = phase(ps.Phase), ps.Record
		p.createdAt, p.exitedAt, p.exitStatus = ps.CreatedAt, ps.ExitedAt, ps.ExitStatus
		switch {
		case p.phase == phaseRunning && ps.Holder != nil:
			var life *os.File
			if ps.Holder.Life >= 0 {
				f, err := adopt(ps.Holder.Life, "holder life pipe", false)
				if err != nil {
					return fmt.Errorf("sandbox %s: %w", ps.ID, err)
				}
				life = f
			}
			p.holder = holder.Import(*ps.Holder, life, s.cfg.Reaper.Adopt(ps.Holder.Pid))
			if cg == "" {
				s.giveCgroup(p)
			}
			p.watch(p.holder)
		case p.phase == phaseStopped:
			p.mu.Lock() // not shared yet; closeDoneLocked's contract all the same
			p.closeDoneLocked()
			p.mu.Unlock()
		}
		s.mu.Lock()
		s.pods[p.id] = p
		s.mu.Unlock()
	}
	return nil
}
