package service

import (
	"fmt"
	"os"
	"sort"
	"time"

	"github.com/containerd/errdefs"

	"github.com/example/containerd-shim-example-v2/oomlog"
	"github.com/example/containerd-shim-example-v2/process"
)

// The service's part of an in-place upgrade (docs/upgrade.md): its tasks,
// described for the next binary and rebuilt by it. The upgrade package
// drives the order; requests are paused before any of this runs, so no
// request handler runs meanwhile.

// State is the service's tasks as handed over.
type State struct {
	Containers []process.ContainerState `json:"containers"`
	// Expected: the tasks a `start` announced (Join) whose Create has not
	// come yet, each with the time it is still waited for. The next binary
	// keeps waiting for them, or the window Join closes would open again
	// across the upgrade. A binary from before the field ignores it.
	Expected map[string]time.Duration `json:"expected,omitempty"`
	// OOMLog (layout 12 on) is the kernel's log of OOM victims, once read
	// (for a systemd-managed container): the next binary reads on from
	// where this one stopped, so a kill logged during the switch is found
	// after the containers' marks (oomlog.State says why). Older layouts
	// had none: the log was opened anew, at its end.
	OOMLog *oomlog.State `json:"oomLog,omitempty"`
}

func (s *Service) list() []*process.Container {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]*process.Container, 0, len(s.containers))
	for _, c := range s.containers {
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// Handable reports whether every task can be handed over now.
func (s *Service) Handable() error {
	if s.cfg.Gate.Closed() {
		return fmt.Errorf("the shim is shutting down: %w", errdefs.ErrFailedPrecondition)
	}
	s.mu.Lock()
	pending := len(s.pending)
	s.mu.Unlock()
	if pending > 0 {
		return fmt.Errorf("%d task(s) being created: %w", pending, errdefs.ErrFailedPrecondition)
	}
	if err := s.stillLeaving(nil); err != nil {
		return err
	}
	for _, c := range s.list() {
		if err := c.Handable(); err != nil {
			return err
		}
	}
	return nil
}

// Halt pauses OOM notifications and halts every task's stdio relays; on
// error none stays halted.
func (s *Service) Halt(timeout time.Duration) error {
	// OOM notifications first: none may change a container's count, or
	// publish, between here and the export (cgroup.OOMWatcher.Pause).
	s.oom.Pause()
	list := s.list()
	for i, c := range list {
		if err := c.Halt(timeout); err != nil {
			for _, h := range list[:i] {
				h.Restart()
			}
			s.oom.Resume()
			return err
		}
	}
	return nil
}

// Restart undoes Halt.
func (s *Service) Restart() {
	for _, c := range s.list() {
		c.Restart()
	}
	s.oom.Resume()
}

// Export describes every (halted) task, keeping its descriptors.
func (s *Service) Export(fds process.FDKeeper) (*State, error) {
	st := &State{}
	for _, c := range s.list() {
		cs, err := c.Export(fds)
		if err != nil {
			return nil, fmt.Errorf("container %s: %w", c.ID, err)
		}
		st.Containers = append(st.Containers, *cs)
	}
	st.Expected = s.cfg.Gate.Expecting()
	var err error
	if st.OOMLog, err = s.oomLog.Export(fds.KeepRaw); err != nil {
		return nil, fmt.Errorf("the kernel's OOM log: %w", err)
	}
	return st, nil
}

// Import rebuilds handed-over tasks. Call it before the reaper runs.
func (s *Service) Import(st State, adopt func(fd int, name string, pollable bool) (*os.File, error)) error {
	// Before the containers: one without a mark handed over marks the log,
	// which would open it anew.
	if st.OOMLog != nil {
		if err := s.oomLog.Import(*st.OOMLog); err != nil {
			return err
		}
	}
	for _, cs := range st.Containers {
		importedStallTimeout(&cs) // stallpolicy.go
		c, err := process.Import(s.cfg.Reaper, cs, process.CreateConfig{Events: s.containerEvents(), OOM: &s.oom, OOMLog: &s.oomLog,
			ReaderOwner: s.cfg.ContainerdStatus}, adopt)
		if err != nil {
			return fmt.Errorf("container %s: %w", cs.ID, err)
		}
		// A bundle gone meanwhile is claimed by its path alone.
		identity, idErr := identifyBundle(c.Bundle)
		s.mu.Lock()
		s.containers[c.ID] = c
		if idErr == nil {
			s.bundles[c.ID] = identity
		}
		s.mu.Unlock()
	}
	for id, left := range st.Expected {
		if err := s.cfg.Gate.Expect(id, left); err != nil {
			return fmt.Errorf("expected task %s: %w", id, err)
		}
	}
	return nil
}
