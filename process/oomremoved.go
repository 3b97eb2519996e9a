package process

import (
	"log/slog"
	"time"

	"github.com/example/containerd-shim-example-v2/cgroup"
	"github.com/example/containerd-shim-example-v2/oomlog"
)

// OOM kills in a cgroup that systemd manages (the runtime's systemd cgroup
// driver). systemd removes such a cgroup as soon as its last process is
// gone, its kill count with it, and an OOM kill is what empties a container
// whose init it kills. The kernel spaces a file's notices 10 ms apart, and
// the notice of a kill that comes right after the limit was met (and
// noticed) is held back for the rest of those 10 ms: time enough for the
// victim to die and systemd to remove the cgroup. In the systemd lane both
// reads, at the notice and at the reap, came too late, as the stock shim's
// do. The kernel's log closes the race: it names the victim before the
// kill, and outlives the cgroup (reportOOMOfRemovedCgroup). Where it cannot
// be read, two things narrow it: once a notice shows the limit met, the
// count is read every oomPollEvery, oomPolls times (pollOOM); and where the
// cgroup is gone all the same, the parent's count, which includes the
// subtree's, tells that a kill happened since the last read.
const (
	oomPollEvery = time.Millisecond
	oomPolls     = 30
	// oomRemovedWindow is how recently the container must have met its
	// limit for a kill counted in its parent to be taken for its own.
	oomRemovedWindow = 200 * time.Millisecond
	// oomReadsWait bounds the wait for reads under way (oom.reads).
	oomReadsWait = 100 * time.Millisecond
)

// startPollOOM starts the reads of pollOOM; c.mu is held.
func (c *Container) startPollOOM() {
	c.oom.polling, c.oom.pollFrom = true, c.oom.seen
	c.pollOOM(oomPolls)
}

// pollOOM reads the count n more times, oomPollEvery apart, through the
// watcher (an upgrade's pause holds it as it holds notifications), until a
// kill is reported, the cgroup is gone, the exit recorded or the container
// deleted.
func (c *Container) pollOOM(n int) {
	c.oomWatcher.After(oomPollEvery, func() {
		gone := c.reportOOM(true) != nil
		c.mu.Lock()
		defer c.mu.Unlock()
		if n <= 1 || gone || c.exitRecorded || c.oom.stopped || c.oom.seen > c.oom.pollFrom {
			c.oom.polling = false
			return
		}
		c.pollOOM(n - 1)
	})
}

// readParentOOM reads the parent's kill count for a systemd-managed v2
// cgroup, just before a read of the cgroup's own, for
// reportOOMOfRemovedCgroup; nil when there is none to keep.
func (c *Container) readParentOOM() *uint64 {
	if !c.cg.V2 || !c.rt.SystemdCgroup {
		return nil
	}
	n, perr := parentOOMKills(c.cg)
	if perr != nil {
		return nil
	}
	return &n
}

// parentOOMKills is Cgroup.ParentOOMKills (a variable for tests, which count
// a kill between its reads and the container's).
var parentOOMKills = (*cgroup.Cgroup).ParentOOMKills

// parentOOMStill reports whether the parent's count, read again after the
// container's, is still first. The kernel counts a kill in the victim's
// cgroup, then in each ancestor's, a few instructions later: every kill the
// container's read found is then in first as well.
func (c *Container) parentOOMStill(first uint64) bool {
	again := c.readParentOOM()
	return again != nil && *again == first
}

// markOOMLog keeps the kernel's log of OOM victims for a container whose
// cgroup systemd manages, marked where it ends: a victim with the init's PID
// logged later is the init. Taken before the init exists, and again at each
// kill reported (publishOOM), whose victim must not be
// reported twice. A log that cannot be read (no privilege for it) leaves
// the parent's count to decide.
func (c *Container) markOOMLog(log *oomlog.Log) {
	if !c.readsOOMLog(log) {
		return
	}
	mark, err := log.Mark()
	if err != nil {
		slog.Debug("the kernel's log of OOM kills cannot be read", "container", c.ID, "error", err)
		return
	}
	c.oom.log, c.oom.logMark = log, mark
}

// readsOOMLog reports whether the container looks for its init's kill in
// log: its cgroup is systemd's, and its OOM kills are published.
func (c *Container) readsOOMLog(log *oomlog.Log) bool {
	return log != nil && c.events.OOM != nil && c.rt.SystemdCgroup
}

// reportOOMOfRemovedCgroup reports the OOM kill of an init whose cgroup
// systemd removed before its count could be read, status being the init's.
// The kernel's log tells (loggedVictim). Where it names no victim of the
// container (it cannot be read, or a shim in a PID namespace of its own
// found no summary line with the victim's cgroup), the parent's count
// decides, on v2: the init died of SIGKILL, the container met its own limit
// within oomRemovedWindow, and the parent counted a kill since the last read
// beyond those reported. Another process under the same parent killed in
// that window, while this init died of another SIGKILL, would be taken for
// this one; a kubelet pod's slice holds only the pod's containers.
func (c *Container) reportOOMOfRemovedCgroup(status int) {
	if c.cg == nil || c.events.OOM == nil || !c.rt.SystemdCgroup || status != 128+9 || c.cg.Exists() {
		return
	}
	// A notice's read may have been made and not yet recorded (it waits
	// for c.mu, which another call can hold for a while): its marks are the
	// ones to compare with.
	for deadline := time.Now().Add(oomReadsWait); c.oom.reads.Load() > 0 && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
	}
	now, err := c.cg.ParentOOMKills()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.exitRecorded || c.oom.stopped {
		return
	}
	metLimit := !c.oom.limitMetAt.IsZero() && time.Since(c.oom.limitMetAt) <= oomRemovedWindow
	var how string
	if v, logged := c.loggedVictim(); logged {
		how = "by the kernel's log: systemd removed the container's cgroup before its count could be read"
		if c.oom.scope = c.cg.ScopeOfLogged(v.OOMMemcg, v.TaskMemcg); c.oom.scope == "" && metLimit {
			c.oom.scope = cgroup.OOMScopeContainer
		}
	} else if err == nil && c.oom.parentKnown && now > c.oom.parentKills+(c.oom.seen-c.oom.seenAtParent) && metLimit {
		// The parent counted more kills since its last read than were
		// reported from the container's count since.
		how = "by the parent cgroup: systemd removed the container's before it could be read"
		c.oom.scope = cgroup.OOMScopeContainer
	} else {
		return
	}
	c.oom.seen++
	if err == nil {
		c.oom.parentKills, c.oom.seenAtParent = now, c.oom.seen
	}
	slog.Warn("OOM kill in container", "container", c.ID, "limit", c.oom.scope, "kills", c.oom.seen, "counted", how)
	c.publishOOM()
}

// loggedVictim looks for the init among the OOM victims the kernel logged
// since the mark: by its PID, or by its cgroup, for a shim whose PIDs are not
// the kernel's (in a PID namespace of its own, as in a kind node). Any
// process of the container counts, as in the container's own kill count.
// c.mu is held (the init's PID no longer changes).
func (c *Container) loggedVictim() (oomlog.Victim, bool) {
	if c.oom.log == nil {
		return oomlog.Victim{}, false
	}
	pid := c.init.Pid()
	v, ok, err := c.oom.log.Victim(c.oom.logMark, func(v oomlog.Victim) bool {
		return v.Pid == pid || c.cg.HoldsLogged(v.TaskMemcg)
	})
	if err != nil {
		slog.Debug("read the kernel's log of OOM kills", "container", c.ID, "error", err)
	}
	return v, ok
}

// metricsOfRemovedCgroup answers Stats for a container whose init has
// exited and whose cgroup systemd removed with it: what was last read of its
// OOM kills, and every kill reported. containerd 2.x's CRI asks for them at a
// 137 exit, before it has handled the OOM event (which comes by another
// path), and marks the container OOMKilled only if they count a kill: an
// error, the stock shim's answer there, leaves it "Error" until the event
// lands.
func (c *Container) metricsOfRemovedCgroup(cg *cgroup.Cgroup) (data []byte, typeURL string, ok bool) {
	if !c.rt.SystemdCgroup {
		return nil, "", false
	}
	c.mu.Lock()
	events, kills, exited := c.oom.events, c.oom.seen, c.exitRecorded
	c.mu.Unlock()
	if !exited {
		return nil, "", false
	}
	data, typeURL, err := cg.MetricsOfRemoved(events, kills)
	return data, typeURL, err == nil
}
