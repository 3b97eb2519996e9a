package process

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync/atomic"
	"time"

	"github.com/containerd/errdefs"

	"github.com/example/containerd-shim-example-v2/cgroup"
	"github.com/example/containerd-shim-example-v2/oomlog"
)

// watchCgroup finds the init's cgroup and starts watching it for OOM kills
// (at create, so even an OOM during start is seen). A container without a
// cgroup of its own still runs; it just has no stats or OOM events. The
// kills the cgroup has counted so far are taken as seen.
func (c *Container) watchCgroup(pid int) {
	cg, err := containerCgroup(pid)
	if err != nil {
		inShim := errors.Is(err, errInShimCgroup)
		if inShim {
			// Expected of every container of a rootless runtime without a
			// delegated cgroup: not a warning each time.
			slog.Info("container has no cgroup of its own; no stats or OOM events", "container", c.ID, "error", err)
		} else {
			slog.Warn("container cgroup not found; no stats or OOM events", "container", c.ID, "error", err)
		}
		c.mu.Lock()
		c.inShimCgroup = inShim
		c.mu.Unlock()
		return
	}
	kills, _ := cg.OOMKills()
	marks := cg.LimitMarks()
	below, _ := killsBelow(cg)
	c.mu.Lock() // Stats may read c.cg meanwhile (a restore's Start sets it late)
	c.cg = cg
	c.oom.seen, c.oom.atCreate, c.oom.limitMarks, c.oom.belowCounted = kills, kills, marks, below
	c.mu.Unlock()
	c.watchOOM()
}

// containerCgroup finds the cgroup of a container's init. A container the
// runtime made no cgroup for has none: a rootless runtime without a delegated
// cgroup (rootless containerd on cgroup v1, or on v2 without delegation)
// leaves it in the shim's own cgroup, which it then shares with the shim, the
// daemon and perhaps a user's whole session. That cgroup's statistics are not
// the container's, and an OOM kill there is not the container's either; the
// stock shim reports both as if they were.
func containerCgroup(pid int) (*cgroup.Cgroup, error) {
	cg, err := cgroup.ForPid(cgroup.DefaultRoot, pid)
	if err != nil {
		return nil, err
	}
	if own, err := cgroup.ForPid(cgroup.DefaultRoot, os.Getpid()); err == nil && cg.Same(own) {
		return nil, fmt.Errorf("process %d: %w", pid, errInShimCgroup)
	}
	return cg, nil
}

// oomState is what a container knows of its OOM kills: what was reported,
// the counts last read, and the reads under way. Guarded by the container's
// mu, but reads, which is atomic.
type oomState struct {
	seen     uint64 // OOM kills already reported (or present at create)
	atCreate uint64 // OOM kills the cgroup had already counted at create
	below    uint64 // v1 kills reported from the cgroups below (killsBelow)
	// belowCounted is killsBelow when last read (at create, at the end of
	// each recheck): a kill below is one counted since.
	belowCounted uint64
	scope        string // where the last reported OOM kill's limit was hit
	stopped      bool   // deleted: no OOM is reported any more
	recheck      bool   // a v1 notification's kill is being looked for (recheckOOM)
	recheckFrom  uint64 // seen when that began: a kill reported since ends it
	// limitMarks are the cgroup's own-limit counters at the last OOM (or at
	// create).
	limitMarks cgroup.LimitMarks
	limitHits  uint64    // v2 memory.events "max" at the last read
	limitMetAt time.Time // when a read last found it grown
	// systemd-managed v2 (oomremoved.go): the parent's kill count at the
	// last read, whether it was read, and seen then (kills reported since
	// are in the parent's count too).
	parentKills  uint64
	parentKnown  bool
	seenAtParent uint64
	// events is v2 memory.events as last read: the metrics of a cgroup
	// systemd removed before the container was deleted (metricsOfRemovedCgroup).
	events map[string]uint64
	// log, when set, is read for the init at an exit whose cgroup is gone:
	// victims logged after logMark (markOOMLog; publishOOM moves it).
	log     *oomlog.Log
	logMark uint64
	// reads counts reportOOM calls between their reads and the record of
	// what they read (reportOOMOfRemovedCgroup waits for them). Atomic: the
	// reads are made without mu.
	reads    atomic.Int32
	polling  bool   // the count is being read again and again (pollOOM)
	pollFrom uint64 // seen when that began: a kill reported since ends it
}

// errInShimCgroup is containerCgroup's answer for a container the runtime made
// no cgroup for.
var errInShimCgroup = fmt.Errorf("in the shim's own cgroup (the runtime made none for it): %w", errdefs.ErrNotFound)

// watchOOM starts watching c.cg for OOM kills, when events have somewhere to
// go.
func (c *Container) watchOOM() {
	if c.events.OOM == nil || c.oomWatcher == nil {
		return
	}
	if stop, err := c.oomWatcher.Watch(c.cg, c.oomNotified); err == nil {
		c.stopOOM = stop
	} else {
		slog.Warn("cannot watch for OOM kills", "container", c.ID, "error", err)
	}
}

// oomNotified handles the cgroup's OOM notification.
func (c *Container) oomNotified() { _ = c.reportOOM(true) }

// reportOOMBeforeExit reports an OOM kill the notification has not (yet)
// delivered, so that an OOM-killed init's /tasks/oom precedes its exit.
func (c *Container) reportOOMBeforeExit() {
	if c.cg == nil || c.events.OOM == nil {
		return
	}
	_ = c.reportOOM(false)
}

// reportOOM publishes an OOM kill not reported yet, found through the
// cgroup's notification (notified) or on the exit path. It returns the
// read's error (on v2: the cgroup is gone).
func (c *Container) reportOOM(notified bool) (readErr error) {
	c.oom.reads.Add(1)
	defer c.oom.reads.Add(-1) // after the record below (defers run last first)
	// The parent's count first: a kill between the two reads is then in
	// the container's, or in neither.
	parent := c.readParentOOM()
	r, err := c.cg.ReadOOM()
	if readErr = err; err != nil {
		parent = nil
	}
	settled := parent != nil && c.parentOOMStill(*parent)
	kills := r.Kills
	c.mu.Lock()
	defer c.mu.Unlock()
	atLimit := err == nil && r.LimitHits > c.oom.limitHits
	if atLimit {
		c.oom.limitHits, c.oom.limitMetAt = r.LimitHits, time.Now()
	}
	if parent != nil {
		// Before this read's kills are counted in oom.seen: a kill between
		// the two reads is in the container's count alone. Unless settled
		// (below).
		c.oom.parentKills, c.oom.parentKnown, c.oom.seenAtParent = *parent, true, c.oom.seen
	}
	if r.Events != nil {
		c.oom.events = r.Events
	}
	switch {
	case notified && c.exitRecorded:
		return // after the exit: out of order (the exit path read the count last)
	case err == nil && kills > c.oom.seen:
		c.oom.seen = kills
		if settled {
			// Every kill of this read is in the parent's count too: one
			// counted before both reads was taken for two.
			c.oom.seenAtParent = kills
		}
	case notified && !c.cg.V2 && errors.Is(err, cgroup.ErrOOMKillsNotCounted):
		// A kernel that counts no kills (before 4.13): the notification is
		// all there is. Counted so the exit path does not report it again.
		c.oom.seen++
	case notified && !c.cg.V2 && err == nil && r.WaitingForMemory:
		// The container's own cgroup has the OOM killer disabled (docker run
		// --oom-kill-disable) and met its limit: its processes wait for
		// memory, and no kill will be counted. The stock shim publishes the
		// notification, which dockerd makes an "oom" event (and OOMKilled)
		// of a container that goes on running; so does this one, without
		// counting a kill in oom.seen.
		slog.Warn("container met its memory limit with the OOM killer disabled", "container", c.ID)
		c.publishOOM()
		return
	case notified && !c.cg.V2 && err == nil:
		// v1 notifies every cgroup below the one whose limit was hit (a
		// pod's, the node's), and before the kill, which only the victim's
		// cgroup counts. A container that lost no process must not report
		// an OOM kill (containerd would mark it OOMKilled for good): look
		// for a counted kill a few times over the next second.
		if !c.oom.recheck {
			c.startRecheckOOM()
		}
		return
	case notified && atLimit && c.rt.SystemdCgroup && c.oom.log == nil && !c.oom.polling && c.oomWatcher != nil:
		// v2: memory.events changed, not oom_kill, but the cgroup met its
		// limit, and systemd may remove it as soon as a kill empties it.
		// Where the kernel's log can be read, it names such a kill's victim
		// at the exit (oomremoved.go), and these reads, many a second for a
		// container that lives at its limit, are not needed.
		c.startPollOOM()
		return
	default:
		return // v2: memory.events changed, but not oom_kill
	}
	c.noteOOMScope(r.Marks)
	c.publishOOM()
	return
}

// oomRecheckAfter is when a v1 notification's kill is looked for: the
// kernel counts it once it has picked and killed a victim, which takes from
// microseconds to, in a large cgroup under pressure, a good part of a second.
var oomRecheckAfter = []time.Duration{time.Millisecond, 10 * time.Millisecond, 100 * time.Millisecond, time.Second}

// startRecheckOOM looks for a v1 notification's kill (recheckOOM); c.mu is
// held.
func (c *Container) startRecheckOOM() {
	c.oom.recheck, c.oom.recheckFrom = true, c.oom.seen
	c.recheckOOM(0)
}

// recheckOOM looks for a counted kill at oomRecheckAfter[i] (through the
// watcher, so an upgrade's pause holds it as it holds notifications), then
// at the next delay until one is found or the delays run out.
func (c *Container) recheckOOM(i int) {
	c.oomWatcher.After(oomRecheckAfter[i], func() {
		kills, err := c.cg.OOMKills()
		c.mu.Lock()
		defer c.mu.Unlock()
		switch {
		case c.exitRecorded || c.oom.stopped || err != nil || c.oom.seen != c.oom.recheckFrom:
			// The exit is recorded (the exit path read the count last); or
			// the container is deleted, or its cgroup gone; or the kill was
			// reported meanwhile (the exit path's read at the reap, another
			// notification): looking on would count it again, as a kill
			// below.
		case kills > c.oom.seen:
			c.oom.seen = kills
			c.noteOOMScope(nil)
			c.publishOOM()
		case i+1 < len(oomRecheckAfter):
			c.recheckOOM(i + 1)
			return
		default:
			c.reportOOMBelow()
		}
		c.oom.recheck = false
	})
}

// reportOOMBelow ends a v1 notification's recheck that found no kill in the
// container's own cgroup: the victim may have been in a cgroup below it
// (systemd or Docker inside the container), whose count v1 keeps there.
// Only a kill counted there is reported: the container's own limit counters
// (failcnt, the peak) say that it met its limit at some time, not that a
// kill followed, and a notification with no kill below was an ancestor's
// limit and another container's process, or a late one of a kill reported
// already. c.mu is held.
func (c *Container) reportOOMBelow() {
	now, ok := killsBelow(c.cg)
	if !ok {
		return
	}
	counted := c.oom.belowCounted
	c.oom.belowCounted = now // lower too: a cgroup below removed took its kills
	if now <= counted {
		return
	}
	c.oom.below += now - counted
	c.oom.scope, c.oom.limitMarks = c.cg.OOMScope(c.oom.limitMarks)
	slog.Warn("OOM kill below the container's cgroup", "container", c.ID, "limit", c.oom.scope, "kills", now-counted)
	c.publishOOM()
}

// killsBelow is the v1 count of OOM kills in the cgroups below cg, and
// whether it could be read: not on v2 (whose own count has them), on a
// kernel that counts none, or once the cgroup is gone.
func killsBelow(cg *cgroup.Cgroup) (uint64, bool) {
	if cg.V2 {
		return 0, false
	}
	n, err := cg.OOMKillsBelow()
	if err != nil {
		slog.Debug("OOM kills below the container's cgroup cannot be read", "error", err)
		return 0, false
	}
	return n, true
}

// noteOOMScope records (and logs) whether the OOM kill just seen came from the
// container's own memory limit or from a cgroup above it: containerd's OOM
// event cannot say, and "OOMKilled" under a pod or node limit is a different
// problem from one under the container's limit. now are the marks read with
// the kill count, nil to read them here. Called with c.mu held.
func (c *Container) noteOOMScope(now *cgroup.LimitMarks) {
	var m cgroup.LimitMarks
	if now != nil {
		m = *now
	} else {
		m = c.cg.LimitMarks()
	}
	c.oom.scope, c.oom.limitMarks = c.cg.OOMScopeOf(c.oom.limitMarks, m)
	if m.Gone {
		// systemd removed the cgroup (v1) between the read of the kill
		// count and this one: the kernel's log, where it is read, names the
		// limit, as for a kill no read saw (reportOOMOfRemovedCgroup).
		if v, logged := c.loggedVictim(); logged {
			if scope := c.cg.ScopeOfLogged(v.OOMMemcg, v.TaskMemcg); scope != "" {
				c.oom.scope = scope
			}
		}
	}
	slog.Warn("OOM kill in container", "container", c.ID, "limit", c.oom.scope, "kills", c.oom.seen)
}

// publishOOM publishes the OOM kill just counted in oom.seen, and moves the
// kernel log's mark past it, so that its victim is not taken for a later
// one; c.mu is held.
func (c *Container) publishOOM() {
	if c.oom.log != nil {
		if mark, err := c.oom.log.Mark(); err == nil {
			c.oom.logMark = mark
		}
	}
	c.events.OOM(c)
}

// OOMInfo returns how many OOM kills the container's cgroup has seen since it
// was created, and where the last one's limit was hit ("" before any).
func (c *Container) OOMInfo() (kills uint64, scope string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cg == nil {
		return 0, ""
	}
	return c.oom.seen - c.oom.atCreate + c.oom.below, c.oom.scope
}
