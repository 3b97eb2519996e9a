// Package process is where a container's processes live and die: it creates
// them through the OCI runtime, keeps each one's state, receives its exit from
// the reaper, and tells its owner (the service) about every transition in the
// order containerd must see them.
//
// It knows nothing of containerd's wire format: callers pass callbacks that
// publish what they need, and those callbacks run under the process's lock so
// a process's start is always reported before its exit.
package process

import (
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/containerd/errdefs"

	"github.com/example/containerd-shim-example-v2/cgroup"
	"github.com/example/containerd-shim-example-v2/internal/proctree"
	shimio "github.com/example/containerd-shim-example-v2/io"
	"github.com/example/containerd-shim-example-v2/oci"
)

// Named limits. Each bounds a wait that must never become a hang.
const (
	// IODrainTimeout bounds how long Delete waits for a process's output to
	// reach the client after it exited. An orphaned grandchild can hold the
	// pipe open forever; containerd's own stock shim waits 10 s.
	IODrainTimeout = 10 * time.Second
	// execsBeforeInitTimeout bounds how long an init's exit waits for the
	// exits of its container's execs to be reported first (and a checkpoint
	// under way, which CRIU's kill ends, to be announced). The kernel kills
	// every process of a PID namespace when its init dies, so this is normally
	// milliseconds.
	execsBeforeInitTimeout = 5 * time.Second
	// deleteCreatedTimeout bounds the wait for a created-but-never-started
	// init to be reaped after the runtime killed it.
	deleteCreatedTimeout = 10 * time.Second
)

// Limits of a Delete whose runtime failed; variables for the tests only.
var (
	// cleanupTimeout bounds runtime calls made while undoing a failed create,
	// and a Delete's forced retry.
	cleanupTimeout = 10 * time.Second
	// stateCheckTimeout bounds asking the runtime whether a container it
	// failed to delete is still there.
	stateCheckTimeout = 5 * time.Second
)

// Events are the callbacks through which a container reports transitions that
// happen on their own (exits). They run in order, under the process's lock,
// so they must not call back into the process: everything they need is in
// the snapshot.
type Events struct {
	Exited func(p *Process, final Snapshot)
	// OOM reports that the kernel OOM-killed in the container's cgroup. It
	// is always reported before the init's exit when that exit was the kill.
	OOM func(c *Container)
}

// stallConfig is a container's output stall policy (CreateConfig's).
type stallConfig struct {
	timeout     time.Duration
	readerOwner func() (down bool, upSince time.Time)
}

// Container is one OCI container: its runtime, its init and its execs.
//
// Locking: mu guards execs, runningExecs, checkpoints, gate, stoppingCheckpoints, answersOwed, initReaped,
// exitRecorded and oom (but oom.reads, atomic); execsIdle is signalled (with mu) when runningExecs or
// stoppingCheckpoints drops to zero.
// A Process's own mutex is never acquired while holding mu.
type Container struct {
	ID        string
	Bundle    string
	Namespace string

	rt         oci.Runtime
	events     Events
	oomWatcher *cgroup.OOMWatcher
	socketDir  string
	stall      stallConfig // the output stall policy of its processes' stdio
	ownPIDNS   bool        // the spec gives the container a PID namespace of its own
	// ownMountNS: the spec gives it a mount namespace of its own, not one it
	// shares (by path) with another container (holdMountNS). Not handed over:
	// Import reads the spec again where it is needed, which serves a
	// predecessor of any layout.
	ownMountNS  bool
	rootfsMount bool // the shim mounted <bundle>/rootfs and must unmount it

	init *Process

	cg *cgroup.Cgroup // nil when the init's cgroup could not be found; set under mu (a restore sets it at Start, while Stats may read it)
	// inShimCgroup: the runtime made no cgroup for the container, which stays in
	// the shim's own (containerCgroup); Pids then lists it from /proc. Set with cg.
	inShimCgroup bool
	stopOOM      func()

	mu        sync.Mutex
	execsIdle *sync.Cond
	execs     map[string]*Process
	// execsReleased: the init's Delete has released the execs
	// (releaseExecs); no exec is added after it.
	execsReleased bool
	runningExecs  int
	// exitedSessions: what the exited init and execs of a container without
	// a cgroup of its own, in a shared pid namespace, left in their sessions
	// (keepExitedSession); they are the container's too.
	exitedSessions []proctree.Exited
	// mountNS: the mount namespace of such a container, held from its init's
	// start until the init's exit has been dealt with (holdMountNS); nil
	// elsewhere.
	mountNS     *proctree.MountNS
	checkpoints int // checkpoints under way: Pause and Resume wait for none (Checkpoint, checkpointBusy)
	gate        launchGate
	// stoppingCheckpoints are those of checkpoints that stop the container:
	// the init's exit is reported after them (waitIdle).
	stoppingCheckpoints int
	answersOwed         int // Wait answers owed for processes gone from the container (oweAnswersLocked, OnExit)
	initReaped          bool
	exitRecorded        bool     // the init's exit is recorded (and published): no OOM after it
	oom                 oomState // what is known of its OOM kills (oom.go)
}

// Init returns the container's init process.
func (c *Container) Init() *Process { return c.init }

// Process returns the init for execID "" or the exec with that id.
func (c *Container) Process(execID string) (*Process, error) {
	if execID == "" {
		return c.init, nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	p, ok := c.execs[execID]
	if !ok {
		return nil, fmt.Errorf("exec %q in container %q: %w", execID, c.ID, errdefs.ErrNotFound)
	}
	return p, nil
}

// Exec registers (does not start) an additional process.
func (c *Container) Exec(execID string, spec []byte, stdio shimio.Config) (*Process, error) {
	if err := c.init.checkOp(OpExec); err != nil {
		return nil, err
	}
	normalized, err := execProcessSpec(spec, stdio.Terminal)
	if err != nil {
		return nil, fmt.Errorf("exec %q: %w", execID, err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.execsReleased {
		// The init's Delete got here while the spec was read: it forgot
		// the execs, and the task is gone.
		return nil, fmt.Errorf("exec %q: container %q deleted: %w", execID, c.ID, errdefs.ErrNotFound)
	}
	if _, ok := c.execs[execID]; ok {
		return nil, fmt.Errorf("exec %q in container %q: %w", execID, c.ID, errdefs.ErrAlreadyExists)
	}
	// An exec's pipes have the owner the container's have (IoUid, IoGid
	// come with the create's options only).
	stdio.UID, stdio.GID = c.init.Stdio.UID, c.init.Stdio.GID
	p := newProcess(c, execID, stdio, nil)
	p.execSpec = normalized
	c.execs[execID] = p
	return p, nil
}

// removeExec forgets a deleted exec.
func (c *Container) removeExec(execID string) {
	c.mu.Lock()
	delete(c.execs, execID)
	c.mu.Unlock()
}

// Execs returns the container's execs, sorted by id.
func (c *Container) Execs() []*Process {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]*Process, 0, len(c.execs))
	for _, p := range c.execs {
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}
