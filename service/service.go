// Package service is where containerd's requests enter the shim: it serves
// the Task API over ttrpc, checks each request, hands the work to the process
// package, publishes the resulting events, and turns errors into wire codes.
package service

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/containerd/errdefs"

	"github.com/example/containerd-shim-example-v2/cgroup"
	"github.com/example/containerd-shim-example-v2/internal/leavegate"
	"github.com/example/containerd-shim-example-v2/oci"
	"github.com/example/containerd-shim-example-v2/oomlog"
	"github.com/example/containerd-shim-example-v2/process"
	introspect "github.com/example/containerd-shim-example-v2/proto/introspect/v1"
	"github.com/example/containerd-shim-example-v2/reaper"
)

// Publisher queues an event for containerd. It must not block.
type Publisher interface {
	Publish(topic string, event any)
}

// Config wires a Service to the daemon around it.
type Config struct {
	Namespace string
	Reaper    *reaper.Reaper
	Events    Publisher
	// RequestExit is called (once) after a Shutdown that found no task left.
	RequestExit func()
	// Gate is the daemon's decision to leave, shared with its other
	// services: Create records its task under it, and Shutdown decides
	// under it. Nil: a gate of the service's own.
	Gate *leavegate.Gate
	// Address is the daemon's own ttrpc address (unix://...), recorded in
	// every task's bundle (see Create).
	Address string
	// SocketDir holds the daemon's socket, and the console sockets runtimes
	// send terminals through (short paths, root-only directory).
	SocketDir string
	// Build and start time, reported by the introspection service.
	Version, Revision string
	Started           time.Time
	// Sandboxes counts the pod sandboxes the daemon serves besides its tasks
	// (the sandbox package's): Shutdown leaves the daemon running while any
	// is left. Nil: none.
	Sandboxes func() int
	// SandboxPid is the pid of a sandbox's namespace holder, so that Pids
	// answers for a sandbox id as containerd asks after a restart. Nil: none.
	SandboxPid func(id string) (int, bool)
	// Upgrade reports the daemon's in-place upgrades (introspection). Nil:
	// none.
	Upgrade func() *introspect.Upgrade
	// Warmer gives the runtime's cgroup migrations a head start (nil:
	// none): an Exec comes a round trip before the Start that runs the
	// runtime's exec, which joins the container's cgroups.
	Warmer *cgroup.MigrationWarmer
	// ContainerdStatus reports whether containerd is known to be down (its
	// socket refuses connections), and if not, since when it has been up
	// (zero: unknown): the FIFOs it reads for CRI are read again once it is
	// back, so the output stall policy waits for their reader (see
	// shimio.Env.ReaderOwner). Nil: nothing known.
	ContainerdStatus func() (down bool, upSince time.Time)
	// TaskGone is called after a task's Delete has removed it, before the
	// answer: the daemon's log may have been going to its bundle. Nil:
	// nothing to tell.
	TaskGone func()
}

// Service implements containerd's Task API for every container of this shim.
//
// Locking: mu guards containers, pending (ids whose Create is in flight),
// bundles (the identity of the bundle of every task in either, see
// bundleclaim.go). It is held only for map access, never across runtime
// calls, and is taken inside the leave gate's lock (see reserve), never
// around it.
type Service struct {
	cfg      Config
	shimPid  uint32
	exitOnce sync.Once
	oom      cgroup.OOMWatcher // every container's OOM notifications, one goroutine
	oomLog   oomlog.Log        // the kernel's log of OOM victims, read for systemd-managed containers

	mu         sync.Mutex
	containers map[string]*process.Container
	pending    map[string]struct{}
	bundles    map[string]bundleID
	// leaving are containers deleted before the exit of an exec their
	// delete killed: an upgrade waits for it (see Handable).
	leaving []*process.Container
}

// New returns a Service.
func New(cfg Config) *Service {
	if cfg.Gate == nil {
		cfg.Gate = new(leavegate.Gate)
	}
	return &Service{
		cfg:        cfg,
		shimPid:    uint32(os.Getpid()),
		containers: make(map[string]*process.Container),
		pending:    make(map[string]struct{}),
		bundles:    make(map[string]bundleID),
	}
}

// Bundles lists the bundles of the tasks the service holds.
func (s *Service) Bundles() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]string, 0, len(s.containers))
	for _, c := range s.containers {
		out = append(out, c.Bundle)
	}
	return out
}

func (s *Service) container(id string) (*process.Container, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.containers[id]
	if !ok {
		return nil, fmt.Errorf("container %q: %w", id, errdefs.ErrNotFound)
	}
	return c, nil
}

func (s *Service) lookup(id, execID string) (*process.Container, *process.Process, error) {
	c, err := s.container(id)
	if err != nil {
		return nil, nil, err
	}
	p, err := c.Process(execID)
	if err != nil {
		return nil, nil, err
	}
	return c, p, nil
}

// reserve claims id and its bundle (path and identity) for a Create in
// flight. Two tasks in one bundle would mount the same rootfs and overwrite
// each other's files. The claim is made under the leave gate, so that a
// daemon deciding to leave either sees it or refuses it.
func (s *Service) reserve(id, bundle string) error {
	identity, err := identifyBundle(bundle)
	if err != nil {
		return err
	}
	err = s.cfg.Gate.AdmitTask(id, func() error { return s.reserveLocked(id, bundle, identity) })
	if errors.Is(err, leavegate.ErrLeaving) {
		return fmt.Errorf("container %q: %w", id, err)
	}
	return err
}

func (s *Service) reserveLocked(id, bundle string, identity bundleID) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.pending[id]; ok {
		return fmt.Errorf("container %q: %w", id, errdefs.ErrAlreadyExists)
	}
	if _, ok := s.containers[id]; ok {
		return fmt.Errorf("container %q: %w", id, errdefs.ErrAlreadyExists)
	}
	// Every task claims its bundle by identity (below), except one handed
	// over whose bundle could not be identified at the import: by path.
	for other, c := range s.containers {
		if c.Bundle == bundle {
			return invalidArgument("bundle %s is already task %q's", bundle, other)
		}
	}
	if other, ok := s.bundleHolderLocked(identity); ok {
		return invalidArgument("bundle %s is task %q's bundle under another path", bundle, other)
	}
	s.pending[id] = struct{}{}
	s.bundles[id] = identity
	return nil
}

func (s *Service) release(id string, c *process.Container) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.pending, id)
	if c != nil {
		s.containers[id] = c
	} else {
		delete(s.bundles, id)
	}
}

func (s *Service) remove(id string) {
	s.mu.Lock()
	delete(s.containers, id)
	delete(s.bundles, id)
	s.mu.Unlock()
}

// stillLeaving keeps c, deleted, among the leaving if an exec its delete
// killed has not exited, forgets those that have, and returns why the
// first one left cannot be forgotten yet. c may be nil.
func (s *Service) stillLeaving(c *process.Container) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if c != nil {
		s.leaving = append(s.leaving, c)
	}
	var first error
	kept := s.leaving[:0]
	for _, l := range s.leaving {
		if err := l.Forgettable(); err != nil {
			kept = append(kept, l)
			if first == nil {
				first = err
			}
		}
	}
	clear(s.leaving[len(kept):])
	s.leaving = kept
	return first
}

// Tasks returns how many tasks the shim holds (created, running, or stopped
// but not yet deleted), counting those being created.
func (s *Service) Tasks() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.containers) + len(s.pending)
}

// runtimeFor builds the OCI runtime command line for a container.
func (s *Service) runtimeFor(o RuntimeOptions) oci.Runtime {
	root := o.Root
	if root == "" {
		root = oci.DefaultRoot
	}
	return oci.Runtime{
		Binary:        o.BinaryName,
		Root:          filepath.Join(root, s.cfg.Namespace),
		SystemdCgroup: o.SystemdCgroup,
		Criu:          o.CriuPath,
	}
}

// warmMigrations starts the kernel's wait for a cgroup migration ahead of the
// runtime call a request leads to (cgroup.MigrationWarmer): a cold write to
// cgroup.procs waits 7-20 ms for it, and the runtime's own comes a few
// milliseconds later, after its start-up (or, for an exec, after containerd's
// Start). One of the daemon's own threads is moved into the cgroup it is in:
// nothing moves the daemon once it serves. Not while another Create is in
// flight (own counts the caller's): its runtime's migration keeps the lock
// warm, and one more taking of the lock would only hold up the runtimes'
// forks and cgroup changes (50 containers created 8 at a time in one pod took
// 4-11 % longer with it).
func (s *Service) warmMigrations(own int) {
	s.mu.Lock()
	others := len(s.pending) - own
	s.mu.Unlock()
	if others > 0 {
		return
	}
	s.cfg.Warmer.KickOwnThread(cgroup.DefaultRoot)
}
