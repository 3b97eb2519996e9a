package process

import (
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/example/containerd-shim-example-v2/cgroup"
	"github.com/example/containerd-shim-example-v2/internal/proctree"
	shimio "github.com/example/containerd-shim-example-v2/io"
	"github.com/example/containerd-shim-example-v2/oci"
	"github.com/example/containerd-shim-example-v2/oomlog"
	"github.com/example/containerd-shim-example-v2/reaper"
)

// An in-place upgrade (issue 14, docs/upgrade.md) hands every container to
// the next binary, which runs in this same process: the containers stay its
// children, and an exit that happens meanwhile waits as a zombie for the new
// binary's reaper. This file describes a container for that handover and
// rebuilds it on the other side.

// FDKeeper keeps duplicates of files and bare descriptors open across
// execve and says their numbers (handover.FDs).
type FDKeeper = shimio.FDKeeper

// ContainerState is a container as handed over.
type ContainerState struct {
	ID          string       `json:"id"`
	Bundle      string       `json:"bundle"`
	Namespace   string       `json:"namespace"`
	Runtime     RuntimeState `json:"runtime"`
	SocketDir   string       `json:"socketDir"`
	OwnPIDNS    bool         `json:"ownPidns"`
	RootfsMount bool         `json:"rootfsMount"`
	InitReaped  bool         `json:"initReaped"`
	OOMSeen     uint64       `json:"oomSeen"`
	OOMAtCreate uint64       `json:"oomAtCreate"`
	OOMScope    string       `json:"oomScope,omitempty"`
	OOMBelow    uint64       `json:"oomBelow,omitempty"`
	// OOMRecheck (layout 4 on): a v1 notification's kill was still being
	// looked for (recheckOOM); the successor looks on.
	OOMRecheck bool `json:"oomRecheck,omitempty"`
	// Cgroup and LimitMarks (layout 3 on) are nil from older layouts, whose
	// successor found the cgroup again from a running init, and only then.
	Cgroup     *cgroup.State      `json:"cgroup,omitempty"`
	LimitMarks *cgroup.LimitMarks `json:"limitMarks,omitempty"`
	// SubtreeMarked (layout 4 on): LimitMarks.Subtree was counted; layout
	// 3's marks have none, and a 0 there is no count.
	SubtreeMarked bool `json:"subtreeMarked,omitempty"`
	// StallTimeout (layout 5 on) is the stall_timeout option, for the stdio
	// of execs still to come (a process's own is in its PipesState); older
	// layouts had none: the default.
	StallTimeout time.Duration `json:"stallTimeout,omitempty"`
	// ExitedSessions (layout 10 on) are what the exited init and execs of
	// a container without a cgroup left in their sessions
	// (keepExitedSession); older layouts had none.
	ExitedSessions []proctree.Exited `json:"exitedSessions,omitempty"`
	// OOMEvents (layout 12 on) is v2 memory.events as last read: Stats of
	// a container whose cgroup systemd removed with its init answers from
	// it (metricsOfRemovedCgroup). Older layouts had none: the kills
	// reported alone.
	OOMEvents map[string]uint64 `json:"oomEvents,omitempty"`
	// OOMLimitHits, OOMLimitMetAgo, OOMParent and OOMLogMark (layout 12
	// on) tell the successor an OOM kill during the switch of an init
	// whose scope systemd removed (reportOOMOfRemovedCgroup): v2
	// memory.events "max" at the last read and how long before the export
	// a read last found it grown (0: never; a duration, for the
	// successor's monotonic clock is not this one's), the parent's count
	// last read, and the kernel log's mark. Older layouts had none: the
	// next read took a limit met long before for one met then, the parent's
	// count was not known until read again, and the log was marked anew,
	// after the switch.
	OOMLimitHits   uint64          `json:"oomLimitHits,omitempty"`
	OOMLimitMetAgo time.Duration   `json:"oomLimitMetAgo,omitempty"`
	OOMParent      *OOMParentCount `json:"oomParent,omitempty"`
	OOMLogMark     *uint64         `json:"oomLogMark,omitempty"`
	Init           ProcessState    `json:"init"`
	Execs          []ProcessState  `json:"execs,omitempty"`
}

// OOMParentCount is the parent's kill count at the last read of a
// systemd-managed container's, and the kills reported then.
type OOMParentCount struct {
	Kills uint64 `json:"kills"`
	Seen  uint64 `json:"seen"`
}

// RuntimeState is the container's runtime command line.
type RuntimeState struct {
	Binary        string `json:"binary"`
	Root          string `json:"root"`
	LogPath       string `json:"logPath"`
	SystemdCgroup bool   `json:"systemdCgroup"`
	Dir           string `json:"dir"`
	Criu          string `json:"criu,omitempty"`
}

// ProcessState is an init or exec as handed over. Pidfd is a descriptor
// number in the successor, or -1.
type ProcessState struct {
	ID       string             `json:"id"`
	Stdio    shimio.Config      `json:"stdio"`
	ExecSpec []byte             `json:"execSpec,omitempty"`
	Status   Status             `json:"status"`
	Pid      int                `json:"pid"`
	Pidfd    int                `json:"pidfd"`
	ExitCode int                `json:"exitCode"`
	ExitedAt time.Time          `json:"exitedAt"`
	Pipes    *shimio.PipesState `json:"pipes,omitempty"`
}

// processes lists the init and the execs.
func (c *Container) processes() []*Process {
	ps := []*Process{c.init}
	return append(ps, c.Execs()...)
}

// Handable reports whether the container can be handed over now: every
// process started (or gone) with stdio that can be (see io.Pipes.Handable).
func (c *Container) Handable() error {
	c.mu.Lock()
	owed := c.answersOwed
	c.mu.Unlock()
	if owed > 0 {
		return answersOwedError(c.ID, owed)
	}
	for _, p := range c.processes() {
		p.mu.Lock()
		st, pipes, deleting, restore := p.status, p.pipes, p.deleting, p.restore
		p.mu.Unlock()
		name := p.name()
		switch {
		case deleting:
			return fmt.Errorf("%s is being deleted: %w", name, errdefs.ErrFailedPrecondition)
		case restore != nil:
			// Nothing runs in it yet: the restore at its Start would be
			// this binary's to do, from options the state does not carry.
			return fmt.Errorf("%s is to be restored from a checkpoint at its start: %w", name, errdefs.ErrFailedPrecondition)
		case st == Running || st == Paused || (st == Stopped && pipes != nil) || (st == Created && p.IsInit()):
			// A created init is the runtime's process waiting for its
			// start, and is handed over as a running one is: the successor
			// claims its exit, watches its cgroup and starts it.
			if pipes == nil {
				continue
			}
			// A stopped process's stdio that cannot be handed over is left
			// behind, once nothing more can come out of it: its relay would
			// die with this binary, and with it output still on its way (a
			// pty not yet read, a background child still writing).
			if err := pipes.Handable(); err != nil && (st != Stopped || !pipes.Delivered()) {
				return fmt.Errorf("%s: %w", name, err)
			}
		}
	}
	return nil
}

// Forgettable reports whether a deleted container may be left out of an
// upgrade. An exec killed at the delete (releaseExecs) whose exit has not
// come yet still has waiters, and so may a process whose waiters' answers
// are being written: only this binary can answer them, for the next one
// would know neither the process nor its container (oweAnswersLocked).
func (c *Container) Forgettable() error {
	c.mu.Lock()
	running, owed := c.runningExecs, c.answersOwed
	c.mu.Unlock()
	switch {
	case running > 0:
		return fmt.Errorf("container %s was deleted with %d exec(s) killed and not exited yet: %w", c.ID, running, errdefs.ErrFailedPrecondition)
	case owed > 0:
		return answersOwedError(c.ID, owed)
	}
	return nil
}

func answersOwedError(id string, n int) error {
	return fmt.Errorf("container %s: the Waits of %d deleted process(es) are still being answered: %w", id, n, errdefs.ErrFailedPrecondition)
}

// Halt stops the stdio relays of every process between two chunks. On
// error none stays halted.
func (c *Container) Halt(timeout time.Duration) error {
	var halted []*shimio.Pipes
	for _, p := range c.processes() {
		p.mu.Lock()
		pipes := p.pipes
		p.mu.Unlock()
		if pipes == nil || pipes.Handable() != nil {
			continue // none, or closed (Delete) or its process gone for good
		}
		if err := pipes.Halt(timeout); err != nil {
			for _, h := range halted {
				h.Restart()
			}
			return fmt.Errorf("container %s: %w", c.ID, err)
		}
		halted = append(halted, pipes)
	}
	return nil
}

// Restart undoes Halt (the upgrade did not happen).
func (c *Container) Restart() {
	for _, p := range c.processes() {
		p.mu.Lock()
		pipes := p.pipes
		p.mu.Unlock()
		if pipes != nil && pipes.Handable() == nil {
			pipes.Restart()
		}
	}
}

// Export describes a halted container, keeping its descriptors.
func (c *Container) Export(fds FDKeeper) (*ContainerState, error) {
	c.mu.Lock()
	st := &ContainerState{
		ID: c.ID, Bundle: c.Bundle, Namespace: c.Namespace,
		Runtime:   RuntimeState{Binary: c.rt.Binary, Root: c.rt.Root, LogPath: c.rt.LogPath, SystemdCgroup: c.rt.SystemdCgroup, Dir: c.rt.Dir, Criu: c.rt.Criu},
		SocketDir: c.socketDir, OwnPIDNS: c.ownPIDNS, RootfsMount: c.rootfsMount,
		InitReaped: c.initReaped, OOMSeen: c.oom.seen, OOMAtCreate: c.oom.atCreate, OOMScope: c.oom.scope,
		OOMBelow: c.oom.below, OOMRecheck: c.oom.recheck, StallTimeout: c.stall.timeout,
		ExitedSessions: slices.Clone(c.exitedSessions), OOMEvents: maps.Clone(c.oom.events),
	}
	if c.cg != nil {
		cs, marks := c.cg.State(), c.oom.limitMarks
		st.Cgroup, st.LimitMarks, st.SubtreeMarked = &cs, &marks, true
	}
	c.exportRemovedScopeMarks(st)
	c.mu.Unlock()
	var err error
	for _, p := range c.processes() {
		var ps *ProcessState
		if ps, err = p.export(fds); err != nil {
			return nil, err
		}
		if p.IsInit() {
			st.Init = *ps
		} else {
			st.Execs = append(st.Execs, *ps)
		}
	}
	return st, nil
}

func (p *Process) export(fds FDKeeper) (*ProcessState, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	ps := &ProcessState{ID: p.ID, Stdio: p.Stdio, ExecSpec: p.execSpec, Status: p.status, Pid: p.pid, Pidfd: -1,
		ExitCode: p.exitCode, ExitedAt: p.exitedAt}
	if p.pidfd >= 0 {
		fd, err := fds.KeepRaw(p.pidfd, "pidfd")
		if err != nil {
			return nil, err
		}
		ps.Pidfd = fd
	}
	if p.pipes != nil && p.pipes.Handable() == nil {
		pst, err := p.pipes.Export(fds)
		if err != nil {
			return nil, fmt.Errorf("%s stdio: %w", p.describe(), err)
		}
		ps.Pipes = pst
	}
	return ps, nil
}

func (p *Process) describe() string {
	if p.IsInit() {
		return "container " + p.c.ID
	}
	return "exec " + p.ID + " of " + p.c.ID
}

// Import rebuilds a handed-over container and claims the exits of its
// running processes from r. Call it before r reaps anything: an exit that
// happened during the switch waits as a zombie until then, and is reported
// once, here.
func Import(r *reaper.Reaper, st ContainerState, cfg CreateConfig, adopt func(fd int, name string, pollable bool) (*os.File, error)) (*Container, error) {
	c := &Container{
		ID: st.ID, Bundle: st.Bundle, Namespace: st.Namespace,
		rt: oci.Runtime{Binary: st.Runtime.Binary, Root: st.Runtime.Root, LogPath: st.Runtime.LogPath,
			SystemdCgroup: st.Runtime.SystemdCgroup, Dir: st.Runtime.Dir, Criu: st.Runtime.Criu, Reaper: r},
		events: cfg.Events, oomWatcher: cfg.OOM, socketDir: st.SocketDir,
		ownPIDNS: st.OwnPIDNS, rootfsMount: st.RootfsMount, initReaped: st.InitReaped,
		oom: oomState{seen: st.OOMSeen, atCreate: st.OOMAtCreate, scope: st.OOMScope, below: st.OOMBelow,
			events: st.OOMEvents},
		stall: stallConfig{timeout: st.StallTimeout, readerOwner: cfg.ReaderOwner},
		execs: make(map[string]*Process),
		// Kept as handed over: Gone ones go at the next exit.
		exitedSessions: st.ExitedSessions,
	}
	c.execsIdle = sync.NewCond(&c.mu)
	c.importRemovedScopeMarks(st, cfg.OOMLog)
	init, err := importProcess(c, st.Init, adopt)
	if err != nil {
		return nil, err
	}
	c.init = init
	// initExited records the init Stopped only after the exit itself, so
	// a stopped (or deleted) init's exit is recorded: no OOM is reported
	// after it, and Stats of a cgroup systemd removed answers from what
	// was last read of it.
	c.exitRecorded = init.status == Stopped || init.status == Deleted
	for _, es := range st.Execs {
		p, err := importProcess(c, es, adopt)
		if err != nil {
			return nil, err
		}
		c.execs[p.ID] = p
		if p.status == Running {
			c.runningExecs++
		}
	}
	c.importCgroup(st, init.alive())
	if c.cg != nil && init.alive() {
		c.watchOOM()
		// A kill between the predecessor's pause of its OOM watcher and this
		// watch was seen by neither: its count tells.
		c.reportOOMBeforeExit()
		if st.OOMRecheck && !c.cg.V2 && c.events.OOM != nil && c.oomWatcher != nil {
			// The predecessor was still looking for a v1 notification's
			// kill, which the kernel may count only now: look on, here.
			c.mu.Lock()
			if c.oom.seen == st.OOMSeen && !c.oom.recheck {
				c.startRecheckOOM()
			}
			c.mu.Unlock()
		}
	}
	if c.tracksSessions() && init.alive() {
		// Read where holdMountNS needs it, as the predecessor read it.
		if spec, err := readSpec(c.Bundle); err == nil {
			c.ownMountNS = hasOwnNamespace(spec, specs.MountNamespace)
		}
	}
	// The exits: claimed now, delivered once the reaper runs.
	for _, p := range c.processes() {
		if !p.alive() {
			continue
		}
		p.session = c.noteSession(p.pid) // read again: it is not handed over
		if p.IsInit() {
			c.holdMountNS(p.pid) // held again, as it cannot be handed over
		}
		exitc := r.Adopt(p.pid)
		if p.IsInit() {
			r.Then(p.pid, exitc, c.initExited)
		} else {
			r.Then(p.pid, exitc, p.execExited)
		}
	}
	return c, nil
}

// importCgroup takes the cgroup and the OOM scope's marks handed over. An
// older layout has neither: the cgroup is found again from a running init
// and its marks read now. The v1 count of kills below the cgroup is read
// now in every layout.
func (c *Container) importCgroup(st ContainerState, initRunning bool) {
	var err error
	switch {
	case st.Cgroup != nil:
		c.cg, err = cgroup.FromState(cgroup.DefaultRoot, *st.Cgroup)
	case initRunning:
		c.cg, err = containerCgroup(c.init.pid)
	}
	if err != nil {
		slog.Warn("container cgroup not found after the upgrade; no stats or OOM events", "container", c.ID, "error", err)
		c.inShimCgroup = errors.Is(err, errInShimCgroup)
		return
	}
	switch {
	case st.LimitMarks != nil:
		c.oom.limitMarks = *st.LimitMarks
		if c.cg != nil && c.cg.V2 && !st.SubtreeMarked {
			// Layout 3 has no count of the limits below: take today's, or
			// every earlier one would read as a new kill below.
			c.oom.limitMarks.Subtree = c.cg.LimitMarks().Subtree
		}
	case c.cg != nil:
		c.oom.limitMarks = c.cg.LimitMarks()
	}
	if c.cg != nil {
		// Not handed over: a kill below counted during the switch and not
		// yet reported is taken as reported.
		c.oom.belowCounted, _ = killsBelow(c.cg)
	}
}

// exportRemovedScopeMarks describes what oomremoved.go tells the kill of
// an init whose scope systemd removed by; c.mu is held.
func (c *Container) exportRemovedScopeMarks(st *ContainerState) {
	st.OOMLimitHits = c.oom.limitHits
	if !c.oom.limitMetAt.IsZero() {
		st.OOMLimitMetAgo = max(time.Since(c.oom.limitMetAt), time.Nanosecond) // 0 is never
	}
	if c.oom.parentKnown {
		st.OOMParent = &OOMParentCount{Kills: c.oom.parentKills, Seen: c.oom.seenAtParent}
	}
	if c.oom.log != nil {
		mark := c.oom.logMark
		st.OOMLogMark = &mark
	}
}

// importRemovedScopeMarks takes what exportRemovedScopeMarks described. The
// time of the switch itself is not in the limit's age (it is counted from
// the export): a limit met just before it reads as met a few milliseconds
// later than it was, within oomRemovedWindow all the same.
func (c *Container) importRemovedScopeMarks(st ContainerState, log *oomlog.Log) {
	c.oom.limitHits = st.OOMLimitHits
	if st.OOMLimitMetAgo > 0 {
		c.oom.limitMetAt = time.Now().Add(-st.OOMLimitMetAgo)
	}
	if p := st.OOMParent; p != nil {
		c.oom.parentKills, c.oom.parentKnown, c.oom.seenAtParent = p.Kills, true, p.Seen
	}
	if st.OOMLogMark != nil && c.readsOOMLog(log) {
		// The predecessor's mark: a kill logged during the switch is after
		// it, where a mark taken now would pass it by.
		c.oom.log, c.oom.logMark = log, *st.OOMLogMark
		return
	}
	c.markOOMLog(log) // a kill logged before this mark is not looked for
}

func running(s Status) bool { return s == Running || s == Paused }

// alive reports whether a handed-over process has a process of its own to
// claim: a running or paused one, or a created init (the runtime's, waiting
// for its start). A created exec has none until it starts.
func (p *Process) alive() bool {
	return running(p.status) || (p.status == Created && p.IsInit() && p.pid > 0)
}

func importProcess(c *Container, ps ProcessState, adopt func(fd int, name string, pollable bool) (*os.File, error)) (*Process, error) {
	p := newProcess(c, ps.ID, ps.Stdio, nil)
	p.execSpec, p.status, p.pid, p.exitCode, p.exitedAt = ps.ExecSpec, ps.Status, ps.Pid, ps.ExitCode, ps.ExitedAt
	if ps.Pidfd >= 0 {
		// A bare descriptor, as the shim keeps pidfds: close-on-exec again.
		if _, err := unix.FcntlInt(uintptr(ps.Pidfd), unix.F_SETFD, unix.FD_CLOEXEC); err != nil {
			return nil, fmt.Errorf("adopt pidfd %d: %w", ps.Pidfd, err)
		}
		p.pidfd = ps.Pidfd
	}
	if ps.Pipes != nil {
		pipes, err := shimio.ImportPipes(*ps.Pipes, adopt, c.ioEnv(p.ID))
		if err != nil {
			return nil, fmt.Errorf("%s stdio: %w", p.describe(), err)
		}
		p.pipes = pipes
	}
	if p.status == Stopped || p.status == Deleted {
		p.markExitedLocked()
	}
	return p, nil
}
