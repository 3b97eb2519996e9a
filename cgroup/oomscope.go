package cgroup

import (
	"errors"
	"io/fs"
	"path/filepath"
	"strings"
)

// Where the memory limit behind an OOM kill was reached.
const (
	// OOMScopeContainer: the container's own cgroup hit its limit.
	OOMScopeContainer = "container"
	// OOMScopeAncestor: a cgroup above it did (a pod's, or the node's
	// allocatable limit on kubepods), while the container was within its own.
	OOMScopeAncestor = "ancestor"
	// OOMScopeBelow (v2): a cgroup inside the container's did (systemd, a
	// nested runtime or a memory.max set by the container's own processes),
	// while the container was within its own limit.
	OOMScopeBelow = "below"
)

// limitSlack is how far below its limit a cgroup's peak usage may stay when
// the limit is what failed a charge: the kernel retries a failed batch charge
// page by page, so the last charge that fit leaves less than a batch (64
// pages) free.
const limitSlack = 64 * 4096

// LimitMarks is what the kernel counts about a cgroup's own memory limit,
// taken when a container is created and after each OOM kill; OOMScope
// compares two of them to tell whose limit an OOM kill came from. Its fields
// are exported for the in-place upgrade, which hands the last marks over.
type LimitMarks struct {
	// v2: memory.events.local "oom" (memory.events on kernels without .local):
	// charges that failed on this cgroup's own memory.max. v1: memory.failcnt,
	// which counts failures of this cgroup's own memory limit (not its
	// descendants'); memory.memsw.failcnt is not counted by kernels since 6.x.
	OwnFailures uint64 `json:"ownFailures"`
	// v2 only: memory.events "oom", which counts the failures of this
	// cgroup's limit and of every limit below it, never of one above.
	Subtree uint64 `json:"subtree,omitempty"`
	// v1 only: the cgroup's peak usage (memory or memory+swap) reached its own
	// limit. With memory and memory+swap limits equal (what kubelet sets), the
	// memory+swap counter fails first and neither failcnt moves: the peak is
	// the only trace the limit leaves.
	AtLimit bool `json:"atLimit,omitempty"`
	// v1 only: the cgroup has a memory or memory+swap limit of its own.
	// Not handed over in an upgrade (the layout stays as it is): a successor
	// learns it at the container's next OOM kill, and until then judges a
	// kill whose cgroup is Gone without it (an ancestor's, as before).
	Limited bool `json:"-"`
	// v1 only: the cgroup's own counters were not there to read. systemd
	// removes the scope of its cgroup driver with its last process, and an
	// OOM kill of the init can empty it between the read of the kill count
	// and this one. Its counters are then no evidence either way.
	Gone bool `json:"-"`
	// v1 only: memory.failcnt of every ancestor up to the hierarchy's root.
	Ancestors map[string]uint64 `json:"ancestors,omitempty"`
}

// OOMReading is one read of a cgroup's OOM figures.
type OOMReading struct {
	Kills uint64 // as OOMKills
	// WaitingForMemory (v1): the cgroup has the OOM killer disabled
	// (memory.oom_control "oom_kill_disable 1": `docker run
	// --oom-kill-disable`) and is under OOM: its processes wait for memory,
	// and no kill will be counted for the notification.
	WaitingForMemory bool
	// Marks (v2) are the limit marks read at the same moment: a cgroup that
	// systemd manages (a scope of its cgroup driver) is removed as soon as
	// its last process is gone, and marks read a moment after the count may
	// find the files gone and blame an ancestor. nil on v1, whose marks are
	// read later, with OOMScope.
	Marks *LimitMarks
	// LimitHits (v2): memory.events "max", the charges that met the limit of
	// this cgroup or of one below it. Reclaim follows, and an OOM kill may.
	LimitHits uint64
	// Events (v2) is memory.events as read, for the metrics of a cgroup
	// removed before its container was deleted (MetricsOfRemoved).
	Events map[string]uint64
}

// ReadOOM reads the cgroup's OOM figures: on v2 memory.events once, and
// memory.events.local.
func (c *Cgroup) ReadOOM() (OOMReading, error) {
	if !c.V2 {
		kv, err := readKV(filepath.Join(c.dir("memory"), "memory.oom_control"))
		if err != nil {
			return OOMReading{}, err
		}
		r := OOMReading{WaitingForMemory: kv["oom_kill_disable"] == 1 && kv["under_oom"] == 1}
		r.Kills, err = oomKillOf(kv)
		return r, err
	}
	tree, own, err := v2MemoryEvents(c.dir(""))
	if err != nil {
		return OOMReading{}, err
	}
	kills, err := oomKillOf(tree)
	if err != nil {
		return OOMReading{}, err
	}
	return OOMReading{Kills: kills, Marks: &LimitMarks{OwnFailures: own["oom"], Subtree: tree["oom"]}, LimitHits: tree["max"], Events: tree}, nil
}

// v2MemoryEvents reads a v2 cgroup's memory.events (tree: its subtree's
// counts) and memory.events.local (own: its own), own being tree again on a
// kernel without .local (before 5.2), or when the cgroup went between the
// two reads.
func v2MemoryEvents(dir string) (tree, own map[string]uint64, err error) {
	tree, err = readKV(filepath.Join(dir, "memory.events"))
	if err != nil {
		return nil, nil, err
	}
	own, lerr := readKV(filepath.Join(dir, "memory.events.local"))
	if lerr != nil {
		own = tree
	}
	return tree, own, nil
}

// LimitMarks reads the cgroup's limit counters. Files that cannot be read
// count as zero: a removed cgroup has no OOM kill to explain.
func (c *Cgroup) LimitMarks() LimitMarks {
	dir := c.dir("memory")
	if c.V2 {
		tree, own, _ := v2MemoryEvents(dir) // nil maps read as zero
		return LimitMarks{OwnFailures: own["oom"], Subtree: tree["oom"]}
	}
	m := LimitMarks{Ancestors: map[string]uint64{}}
	var err error
	m.OwnFailures, err = readUint(filepath.Join(dir, "memory.failcnt"))
	m.Gone = errors.Is(err, fs.ErrNotExist)
	memLimited, memAt := peakAtLimit(dir, "memory")
	swapLimited, swapAt := peakAtLimit(dir, "memory.memsw")
	m.Limited, m.AtLimit = memLimited || swapLimited, memAt || swapAt
	top := filepath.Join(c.root, "memory")
	for d := filepath.Dir(dir); strings.HasPrefix(d, top+"/"); d = filepath.Dir(d) {
		m.Ancestors[d], _ = readUint(filepath.Join(d, "memory.failcnt"))
	}
	return m
}

// peakAtLimit reports whether a v1 counter (prefix "memory" or
// "memory.memsw") has a limit, and whether its peak usage came within
// limitSlack of it.
func peakAtLimit(dir, prefix string) (limited, atLimit bool) {
	limit, err1 := readUint(filepath.Join(dir, prefix+".limit_in_bytes"))
	peak, err2 := readUint(filepath.Join(dir, prefix+".max_usage_in_bytes"))
	// An unset v1 limit reads as a huge page-aligned number, not "max".
	const unlimited = 1 << 62
	limited = err1 == nil && limit < unlimited
	return limited, limited && err2 == nil && peak+limitSlack >= limit
}

// OOMScope tells whose limit the OOM kill seen since prev came from, and
// returns the marks to compare the next one with. v2 counts it exactly: its
// own limit's failures, and those of the limits below it. v1
// decides, in order: an ancestor's failcnt grew (a pod's or kubepods'
// limit); the cgroup's own grew (its memory limit); the cgroup's peak
// reached its own limit (its memory+swap limit, which no counter records, or
// the peak was already there and nothing above moved: most likely its own
// limit again); the cgroup was gone (Gone) and had a limit of its own when
// last read.
func (c *Cgroup) OOMScope(prev LimitMarks) (string, LimitMarks) {
	return c.OOMScopeOf(prev, c.LimitMarks())
}

// OOMScopeOf is OOMScope with the marks now already read (ReadOOM).
func (c *Cgroup) OOMScopeOf(prev, now LimitMarks) (string, LimitMarks) {
	if c.V2 {
		return v2Scope(prev, now), now
	}
	return v1Scope(prev, now), now
}

// v2Scope is OOMScopeOf's verdict from v2's exact counts.
func v2Scope(prev, now LimitMarks) string {
	switch {
	case now.OwnFailures > prev.OwnFailures:
		return OOMScopeContainer
	case now.Subtree > prev.Subtree:
		return OOMScopeBelow
	}
	return OOMScopeAncestor
}

// v1Scope is OOMScopeOf's verdict from v1's counters. An ancestor's failcnt
// comes first: v1 counts every charge that met a limit, most of them ended
// by reclaim with no kill, and a container whose page cache lives at its own
// limit moves its own failcnt all the time. An ancestor's limit is met far
// more rarely; a charge that fails on the container's own limit is not
// counted there.
func v1Scope(prev, now LimitMarks) string {
	for d, n := range now.Ancestors {
		if n > prev.Ancestors[d] {
			return OOMScopeAncestor
		}
	}
	if now.OwnFailures > prev.OwnFailures || now.AtLimit {
		return OOMScopeContainer
	}
	if now.Gone && prev.Limited {
		// Its counters went with it, and no ancestor's limit failed a
		// charge: the kill was under its own limit or the node's memory
		// (which no failcnt counts), and its own is far the likelier.
		return OOMScopeContainer
	}
	return OOMScopeAncestor
}

// ScopeOfLogged tells whose limit an OOM kill that the kernel logged came
// from, from the paths of its summary line (oomlog.Victim): the cgroup
// whose limit was met (oomMemcg, "" for the node's memory) against this
// one. The kernel prints paths from the root of the hierarchy; seen from a
// cgroup namespace, c's path is their tail. "" when the line gave no paths.
func (c *Cgroup) ScopeOfLogged(oomMemcg, taskMemcg string) string {
	if taskMemcg == "" || c.hierarchyPath() == "/" {
		return ""
	}
	switch self, below := c.isLogged(oomMemcg); {
	case self:
		return OOMScopeContainer
	case below:
		return OOMScopeBelow
	}
	return OOMScopeAncestor
}

// HoldsLogged reports whether a cgroup path the kernel logged (an OOM
// victim's) is c or a cgroup below it.
func (c *Cgroup) HoldsLogged(kernelPath string) bool {
	self, below := c.isLogged(kernelPath)
	return self || below
}

// isLogged tells whether a cgroup path the kernel logged is c (its tail is
// c's path) or below it; neither for c at the hierarchy's root, which every
// path would match.
func (c *Cgroup) isLogged(kernelPath string) (self, below bool) {
	own := c.hierarchyPath()
	if own == "/" || kernelPath == "" {
		return false, false
	}
	return strings.HasSuffix(kernelPath, own), strings.Contains(kernelPath, own+"/")
}

// hierarchyPath is c's memory cgroup path from its hierarchy's root, as
// /proc/<pid>/cgroup gives it ("/a.slice/b.scope").
func (c *Cgroup) hierarchyPath() string {
	base := c.root
	if !c.V2 {
		base = filepath.Join(c.root, "memory")
	}
	rel := strings.TrimPrefix(c.dir("memory"), base)
	if rel == "" || rel[0] != '/' {
		return "/" + rel
	}
	return rel
}
