package cgroup

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/containerd/errdefs"

	v1 "github.com/example/containerd-shim-example-v2/proto/cgroups/cgroup1/stats"
	v2 "github.com/example/containerd-shim-example-v2/proto/cgroups/cgroup2/stats"
)

// Type URLs containerd (CRI, its metrics exporter) switches on.
const (
	MetricsV1 = "io.containerd.cgroups.v1.Metrics"
	MetricsV2 = "io.containerd.cgroups.v2.Metrics"
)

// StatsV1 reads a v1 cgroup's statistics. Controllers that are missing are
// left out rather than failing the whole answer. Files are read with the
// stack-built paths of withFileIn and parsed in place: CRI polls this for
// every pod and container every second.
func (c *Cgroup) StatsV1() (*v1.Metrics, error) {
	m := &v1.Metrics{}
	if d := c.dir("pids"); d != "" {
		cur, err1 := readUintIn(d, "pids.current")
		max, _ := readUintIn(d, "pids.max")
		if err1 == nil {
			if max == ^uint64(0) {
				max = 0 // containerd's convention: 0 means no limit
			}
			m.Pids = &v1.PidsStat{Current: cur, Limit: max}
		}
	}
	if d := c.dir("cpuacct"); d != "" {
		if total, err := readUintIn(d, "cpuacct.usage"); err == nil {
			u := &v1.CPUUsage{Total: total}
			_ = withFileIn(func(data []byte) { u.PerCPU = appendUints(u.PerCPU, data) }, d, "cpuacct.usage_percpu")
			// Reported in USER_HZ ticks (100 per second on Linux).
			const nsPerTick = 1e9 / 100
			_ = eachKV(func(k []byte, v uint64) {
				switch string(k) {
				case "user":
					u.User = v * nsPerTick
				case "system":
					u.Kernel = v * nsPerTick
				}
			}, d, "cpuacct.stat")
			m.CPU = &v1.CPUStat{Usage: u}
		}
	}
	if d := c.dir("cpu"); d != "" {
		t := &v1.Throttle{}
		if eachKV(func(k []byte, v uint64) {
			switch string(k) {
			case "nr_periods":
				t.Periods = v
			case "nr_throttled":
				t.ThrottledPeriods = v
			case "throttled_time":
				t.ThrottledTime = v
			}
		}, d, "cpu.stat") == nil {
			if m.CPU == nil {
				m.CPU = &v1.CPUStat{}
			}
			m.CPU.Throttling = t
		}
	}
	if d := c.dir("memory"); d != "" {
		mem := &v1.MemoryStat{}
		if eachKV(func(k []byte, v uint64) {
			if f := memoryStatV1Field(mem, k); f != nil {
				*f = v
			}
		}, d, "memory.stat") == nil {
			mem.Usage = memoryEntry(d, "memory")
			mem.Swap = memoryEntry(d, "memory.memsw")
			mem.Kernel = memoryEntry(d, "memory.kmem")
			mem.KernelTCP = memoryEntry(d, "memory.kmem.tcp")
			m.Memory = mem
		}
		oc := &v1.MemoryOomControl{}
		if eachKV(func(k []byte, v uint64) {
			switch string(k) {
			case "oom_kill_disable":
				oc.OomKillDisable = v
			case "under_oom":
				oc.UnderOom = v
			case "oom_kill":
				oc.OomKill = v
			}
		}, d, "memory.oom_control") == nil {
			m.MemoryOomControl = oc
		}
	}
	if d := c.dir("blkio"); d != "" {
		m.Blkio = blkioStatsV1(d)
	}
	if d := c.dir("rdma"); d != "" {
		m.Rdma = rdmaStatsV1(d)
	}
	if d := c.dir("hugetlb"); d != "" {
		// Not among statsControllersV1: runc's directory there outlives a
		// scope systemd removed, and alone it is no sign of the cgroup.
		m.Hugetlb = hugetlbStatsV1(d)
	}
	if m.Pids == nil && m.CPU == nil && m.Memory == nil && m.Blkio == nil {
		if c.gone() {
			// The runtime removed it while the task lives on: a checkpoint
			// that stopped the container, or the systemd driver's scope
			// after its last process. No cgroup is NotFound (as in
			// StatsV2), and containerd's metrics collection skips the
			// task quietly; any other error it logs at every poll.
			return nil, fmt.Errorf("cgroup removed: %w", errdefs.ErrNotFound)
		}
		return nil, errors.New("cgroup has no readable statistics")
	}
	return m, nil
}

// memoryStatV1Field is where a v1 memory.stat key goes (nil: a key the
// metrics have no field for).
func memoryStatV1Field(m *v1.MemoryStat, key []byte) *uint64 {
	switch string(key) {
	case "cache":
		return &m.Cache
	case "rss":
		return &m.RSS
	case "rss_huge":
		return &m.RSSHuge
	case "mapped_file":
		return &m.MappedFile
	case "dirty":
		return &m.Dirty
	case "writeback":
		return &m.Writeback
	case "pgpgin":
		return &m.PgPgIn
	case "pgpgout":
		return &m.PgPgOut
	case "pgfault":
		return &m.PgFault
	case "pgmajfault":
		return &m.PgMajFault
	case "inactive_anon":
		return &m.InactiveAnon
	case "active_anon":
		return &m.ActiveAnon
	case "inactive_file":
		return &m.InactiveFile
	case "active_file":
		return &m.ActiveFile
	case "unevictable":
		return &m.Unevictable
	case "hierarchical_memory_limit":
		return &m.HierarchicalMemoryLimit
	case "hierarchical_memsw_limit":
		return &m.HierarchicalSwapLimit
	case "total_cache":
		return &m.TotalCache
	case "total_rss":
		return &m.TotalRSS
	case "total_rss_huge":
		return &m.TotalRSSHuge
	case "total_mapped_file":
		return &m.TotalMappedFile
	case "total_dirty":
		return &m.TotalDirty
	case "total_writeback":
		return &m.TotalWriteback
	case "total_pgpgin":
		return &m.TotalPgPgIn
	case "total_pgpgout":
		return &m.TotalPgPgOut
	case "total_pgfault":
		return &m.TotalPgFault
	case "total_pgmajfault":
		return &m.TotalPgMajFault
	case "total_inactive_anon":
		return &m.TotalInactiveAnon
	case "total_active_anon":
		return &m.TotalActiveAnon
	case "total_inactive_file":
		return &m.TotalInactiveFile
	case "total_active_file":
		return &m.TotalActiveFile
	case "total_unevictable":
		return &m.TotalUnevictable
	}
	return nil
}

// memoryEntry reads one v1 memory counter (usage, max, failcnt, limit); nil
// when none of its files exists (memsw without swap accounting).
func memoryEntry(dir, prefix string) *v1.MemoryEntry {
	usage, err1 := readUintIn(dir, prefix, ".usage_in_bytes")
	max, err2 := readUintIn(dir, prefix, ".max_usage_in_bytes")
	failcnt, err3 := readUintIn(dir, prefix, ".failcnt")
	limit, err4 := readUintIn(dir, prefix, ".limit_in_bytes")
	if err1 != nil && err2 != nil && err3 != nil && err4 != nil {
		return nil
	}
	return &v1.MemoryEntry{Usage: usage, Max: max, Failcnt: failcnt, Limit: limit}
}

// blkioStatsV1 reads a v1 blkio cgroup's statistics from the files
// containerd/cgroups reads: the CFQ scheduler's where the kernel has them
// and they hold entries, otherwise the throttling layer's (recursive where
// the kernel has those, so that a pod's cgroup counts its containers' IO;
// the cgroup's own before 4.x). The entries name their device as
// /proc/partitions does. Present whenever a file could be read, even with
// no IO yet: Docker turns a present section into empty lists and an absent
// one into null, and the stock shim always has it. Nil otherwise.
func blkioStatsV1(dir string) *v1.BlkIOStat {
	st := &v1.BlkIOStat{}
	read := false
	if _, err := os.Lstat(filepath.Join(dir, "blkio.io_serviced_recursive")); err == nil {
		n := 0
		for _, f := range blkioLists(st) {
			var ok bool
			*f.to, ok = blkioEntries(dir, f.file)
			read = read || ok
			n += len(*f.to)
		}
		if n > 0 {
			nameDevices(st)
			return st
		}
		*st = v1.BlkIOStat{}
	}
	for _, files := range [][2]string{
		{"blkio.throttle.io_service_bytes_recursive", "blkio.throttle.io_serviced_recursive"},
		{"blkio.throttle.io_service_bytes", "blkio.throttle.io_serviced"},
	} {
		bytesDone, ok1 := blkioEntries(dir, files[0])
		opsDone, ok2 := blkioEntries(dir, files[1])
		if ok1 || ok2 {
			st.IoServiceBytesRecursive, st.IoServicedRecursive = bytesDone, opsDone
			nameDevices(st)
			return st
		}
	}
	if read {
		return st
	}
	return nil
}

// blkioList is one of a BlkIOStat's lists, with the CFQ scheduler's file
// it is read from.
type blkioList struct {
	file string
	to   *[]*v1.BlkIOEntry
}

// blkioLists are st's lists (the throttle files fill two of them too).
func blkioLists(st *v1.BlkIOStat) []blkioList {
	return []blkioList{
		{"blkio.sectors_recursive", &st.SectorsRecursive},
		{"blkio.io_service_bytes_recursive", &st.IoServiceBytesRecursive},
		{"blkio.io_serviced_recursive", &st.IoServicedRecursive},
		{"blkio.io_queued_recursive", &st.IoQueuedRecursive},
		{"blkio.io_service_time_recursive", &st.IoServiceTimeRecursive},
		{"blkio.io_wait_time_recursive", &st.IoWaitTimeRecursive},
		{"blkio.io_merged_recursive", &st.IoMergedRecursive},
		{"blkio.time_recursive", &st.IoTimeRecursive},
	}
}

// procDir holds partitions, which lists the block devices by number (a
// variable for tests).
var procDir = "/proc"

// nameDevices gives st's entries the names /proc/partitions has for their
// devices ("/dev/sda"), as containerd/cgroups does (containerd's v1 blkio
// metrics label them so); one read of the file, only when there are entries.
func nameDevices(st *v1.BlkIOStat) {
	lists := blkioLists(st)
	if !slices.ContainsFunc(lists, func(l blkioList) bool { return len(*l.to) > 0 }) {
		return
	}
	_ = withFileIn(func(data []byte) {
		eachLine(data, func(line []byte) {
			// "major minor #blocks name"; the header and the blank line
			// after it do not parse.
			f := bytes.Fields(line)
			if len(f) != 4 {
				return
			}
			maj, err1 := strconv.ParseUint(string(f[0]), 10, 64)
			min, err2 := strconv.ParseUint(string(f[1]), 10, 64)
			if err1 != nil || err2 != nil {
				return
			}
			name := ""
			for _, l := range lists {
				for _, e := range *l.to {
					if e.Major == maj && e.Minor == min {
						if name == "" {
							name = "/dev/" + string(f[3])
						}
						e.Device = name
					}
				}
			}
		})
	}, procDir, "partitions")
}

// blkioEntries reads "major:minor [Op] value" lines of dir/name (the CFQ
// scheduler's sectors and time files have no Op); the "Total" line is
// skipped. ok is false when the file could not be read.
func blkioEntries(dir, name string) (out []*v1.BlkIOEntry, ok bool) {
	err := withFileIn(func(data []byte) {
		eachLine(data, func(line []byte) {
			dev, rest, ok1 := bytes.Cut(bytes.TrimSpace(line), space)
			op, value, ok2 := bytes.Cut(bytes.TrimSpace(rest), space)
			if !ok2 {
				op, value = nil, rest
			}
			maj, min, ok3 := bytes.Cut(dev, colon)
			if !ok1 || !ok3 {
				return
			}
			e := &v1.BlkIOEntry{Op: blkioOp(op)}
			var err1, err2, err3 error
			e.Major, err1 = strconv.ParseUint(string(maj), 10, 64)
			e.Minor, err2 = strconv.ParseUint(string(min), 10, 64)
			e.Value, err3 = strconv.ParseUint(string(bytes.TrimSpace(value)), 10, 64)
			if err1 == nil && err2 == nil && err3 == nil {
				out = append(out, e)
			}
		})
	}, dir, name)
	return out, err == nil
}

var colon = []byte{':'}

// blkioOp is a blkio operation's name, without a copy for the kernel's usual ones.
func blkioOp(op []byte) string {
	for _, known := range [...]string{"Read", "Write", "Sync", "Async", "Discard"} {
		if string(op) == known {
			return known
		}
	}
	return string(op)
}

// appendUints appends the space-separated numbers of data (cpuacct.usage_percpu).
func appendUints(out []uint64, data []byte) []uint64 {
	for _, f := range bytes.Fields(data) {
		if v, err := strconv.ParseUint(string(f), 10, 64); err == nil {
			out = append(out, v)
		}
	}
	return out
}

// StatsV2 reads a v2 cgroup's statistics, read and parsed as StatsV1's are.
func (c *Cgroup) StatsV2() (*v2.Metrics, error) {
	d := c.dir("")
	if _, err := os.Stat(d); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			// Removed (see StatsV1's end): NotFound under both versions.
			return nil, fmt.Errorf("cgroup removed: %v: %w", err, errdefs.ErrNotFound)
		}
		return nil, err
	}
	m := &v2.Metrics{}
	if cur, err := readUintIn(d, "pids.current"); err == nil {
		// "max" stays the largest value, as for memory.max: containerd's
		// cgroups library reports v2 limits so (v1 ones as 0).
		max, _ := readUintIn(d, "pids.max")
		m.Pids = &v2.PidsStat{Current: cur, Limit: max}
	}
	cpu := &v2.CPUStat{}
	if eachKV(func(k []byte, v uint64) {
		switch string(k) {
		case "usage_usec":
			cpu.UsageUsec = v
		case "user_usec":
			cpu.UserUsec = v
		case "system_usec":
			cpu.SystemUsec = v
		case "nr_periods":
			cpu.NrPeriods = v
		case "nr_throttled":
			cpu.NrThrottled = v
		case "throttled_usec":
			cpu.ThrottledUsec = v
		case "nr_bursts":
			cpu.NrBursts = v
		case "burst_usec":
			cpu.BurstUsec = v
		}
	}, d, "cpu.stat") == nil {
		cpu.PSI = readPSI(d, "cpu.pressure")
		m.CPU = cpu
	}
	mem := &v2.MemoryStat{}
	if eachKV(func(k []byte, v uint64) {
		if f := memoryStatV2Field(mem, k); f != nil {
			*f = v
		}
	}, d, "memory.stat") == nil {
		mem.Usage, _ = readUintIn(d, "memory.current")
		mem.UsageLimit, _ = readUintIn(d, "memory.max")
		mem.SwapUsage, _ = readUintIn(d, "memory.swap.current")
		mem.SwapLimit, _ = readUintIn(d, "memory.swap.max")
		mem.MaxUsage, _ = readUintIn(d, "memory.peak")
		mem.SwapMaxUsage, _ = readUintIn(d, "memory.swap.peak")
		mem.PSI = readPSI(d, "memory.pressure")
		m.Memory = mem
	}
	ev := &v2.MemoryEvents{}
	if eachKV(func(k []byte, v uint64) {
		if f := memoryEventField(ev, k); f != nil {
			*f = v
		}
	}, d, "memory.events") == nil {
		m.MemoryEvents = ev
	}
	m.Io = ioStats(d)
	m.Hugetlb = hugetlbStats(d)
	m.Rdma = rdmaStatsV2(d)
	return m, nil
}

// rdmaStatsV1 reads a v1 rdma cgroup's rdma.current and rdma.max; nil
// unless both were read and list as many devices (a device removed between
// the two reads: containerd/cgroups leaves the section out then too).
func rdmaStatsV1(dir string) *v1.RdmaStat {
	newEntry := func(dev []byte, handles, objects uint32) *v1.RdmaEntry {
		return &v1.RdmaEntry{Device: string(dev), HcaHandles: handles, HcaObjects: objects}
	}
	cur, err1 := rdmaEntries(dir, "rdma.current", newEntry)
	lim, err2 := rdmaEntries(dir, "rdma.max", newEntry)
	if err1 != nil || err2 != nil || len(cur) != len(lim) {
		return nil
	}
	return &v1.RdmaStat{Current: cur, Limit: lim}
}

// rdmaStatsV2 reads a v2 cgroup's rdma.current and rdma.max; nil where the
// rdma controller is not enabled (no rdma.current), as other controllers'
// sections are left out.
func rdmaStatsV2(dir string) *v2.RdmaStat {
	newEntry := func(dev []byte, handles, objects uint32) *v2.RdmaEntry {
		return &v2.RdmaEntry{Device: string(dev), HcaHandles: handles, HcaObjects: objects}
	}
	cur, err := rdmaEntries(dir, "rdma.current", newEntry)
	if err != nil {
		return nil
	}
	lim, _ := rdmaEntries(dir, "rdma.max", newEntry)
	return &v2.RdmaStat{Current: cur, Limit: lim}
}

// rdmaEntries parses the "<device> hca_handle=N hca_object=N" lines of
// dir/name in place, making one entry of each with newEntry (whose device
// is valid only during the call): v1's and v2's entries are distinct types
// of the same fields.
func rdmaEntries[E any](dir, name string, newEntry func(dev []byte, handles, objects uint32) E) ([]E, error) {
	var out []E
	err := withFileIn(func(data []byte) {
		eachLine(data, func(line []byte) {
			if dev, handles, objects, ok := rdmaLine(line); ok {
				out = append(out, newEntry(dev, handles, objects))
			}
		})
	}, dir, name)
	return out, err
}

// rdmaLine parses one "<device> hca_handle=N hca_object=N" line; ok is false
// unless it has three fields. A count that does not parse stays 0, as in
// containerd/cgroups.
func rdmaLine(line []byte) (dev []byte, handles, objects uint32, ok bool) {
	f := bytes.Fields(line)
	if len(f) != 3 {
		return nil, 0, 0, false
	}
	for _, kv := range f[1:] {
		k, n, ok := rdmaCount(kv)
		if !ok {
			continue
		}
		switch string(k) {
		case "hca_handle":
			handles = n
		case "hca_object":
			objects = n
		}
	}
	return f[0], handles, objects, true
}

// rdmaCount parses one "key=N" of an rdma file. No limit ("max") is the
// largest uint32, as containerd/cgroups reports it; a number beyond it is
// not ok (the field stays 0 there too).
func rdmaCount(kv []byte) (key []byte, n uint32, ok bool) {
	key, v, found := bytes.Cut(kv, equals)
	if !found {
		return nil, 0, false
	}
	if string(v) == "max" {
		return key, math.MaxUint32, true
	}
	u, err := parseUint(string(v))
	if err != nil || u > math.MaxUint32 {
		return nil, 0, false
	}
	return key, uint32(u), true
}

// memoryEventField is where a memory.events key goes (nil: a key the
// metrics have no field for).
func memoryEventField(e *v2.MemoryEvents, key []byte) *uint64 {
	switch string(key) {
	case "low":
		return &e.Low
	case "high":
		return &e.High
	case "max":
		return &e.Max
	case "oom":
		return &e.Oom
	case "oom_kill":
		return &e.OomKill
	case "oom_group_kill":
		return &e.OomGroupKill
	}
	return nil
}

// memoryStatV2Field is where a v2 memory.stat key goes (nil: a key the
// metrics have no field for).
func memoryStatV2Field(m *v2.MemoryStat, key []byte) *uint64 {
	switch string(key) {
	case "anon":
		return &m.Anon
	case "file":
		return &m.File
	case "kernel_stack":
		return &m.KernelStack
	case "slab":
		return &m.Slab
	case "sock":
		return &m.Sock
	case "shmem":
		return &m.Shmem
	case "file_mapped":
		return &m.FileMapped
	case "file_dirty":
		return &m.FileDirty
	case "file_writeback":
		return &m.FileWriteback
	case "anon_thp":
		return &m.AnonThp
	case "inactive_anon":
		return &m.InactiveAnon
	case "active_anon":
		return &m.ActiveAnon
	case "inactive_file":
		return &m.InactiveFile
	case "active_file":
		return &m.ActiveFile
	case "unevictable":
		return &m.Unevictable
	case "slab_reclaimable":
		return &m.SlabReclaimable
	case "slab_unreclaimable":
		return &m.SlabUnreclaimable
	case "pgfault":
		return &m.Pgfault
	case "pgmajfault":
		return &m.Pgmajfault
	case "workingset_refault":
		return &m.WorkingsetRefault
	case "workingset_activate":
		return &m.WorkingsetActivate
	case "workingset_nodereclaim":
		return &m.WorkingsetNodereclaim
	case "pgrefill":
		return &m.Pgrefill
	case "pgscan":
		return &m.Pgscan
	case "pgsteal":
		return &m.Pgsteal
	case "pgactivate":
		return &m.Pgactivate
	case "pgdeactivate":
		return &m.Pgdeactivate
	case "pglazyfree":
		return &m.Pglazyfree
	case "pglazyfreed":
		return &m.Pglazyfreed
	case "thp_fault_alloc":
		return &m.ThpFaultAlloc
	case "thp_collapse_alloc":
		return &m.ThpCollapseAlloc
	}
	return nil
}

// readPSI reads a pressure stall file (cpu.pressure, memory.pressure,
// io.pressure): "some avg10=0.12 avg60=0.05 avg300=0.01 total=12345" and the
// same for "full". nil when the kernel has no PSI (CONFIG_PSI off, psi=0).
func readPSI(dir, name string) *v2.PSIStats {
	var out v2.PSIStats
	_ = withFileIn(func(data []byte) {
		eachLine(data, func(line []byte) {
			kind, rest, _ := bytes.Cut(bytes.TrimSpace(line), space)
			if len(kind) == 0 {
				return
			}
			p := &v2.PSIData{}
			for _, kv := range bytes.Fields(rest) {
				k, v, _ := bytes.Cut(kv, equals)
				switch string(k) {
				case "avg10":
					p.Avg10, _ = strconv.ParseFloat(string(v), 64)
				case "avg60":
					p.Avg60, _ = strconv.ParseFloat(string(v), 64)
				case "avg300":
					p.Avg300, _ = strconv.ParseFloat(string(v), 64)
				case "total":
					p.Total, _ = strconv.ParseUint(string(v), 10, 64)
				}
			}
			switch string(kind) {
			case "some":
				out.Some = p
			case "full":
				out.Full = p
			}
		})
	}, dir, name)
	if out.Some == nil && out.Full == nil {
		return nil
	}
	return &out
}

var equals = []byte{'='}

// hugetlbStatsV1 reads every huge page size's hugetlb.<size>.usage_in_bytes,
// .max_usage_in_bytes and .failcnt of a v1 hugetlb cgroup, as
// containerd/cgroups does; none where the files are missing.
func hugetlbStatsV1(dir string) []*v1.HugetlbStat {
	var out []*v1.HugetlbStat
	for _, size := range hugetlbSizes(dir, "usage_in_bytes") {
		usage, err := readUintIn(dir, "hugetlb.", size, ".usage_in_bytes")
		if err != nil {
			continue
		}
		h := &v1.HugetlbStat{Pagesize: size, Usage: usage}
		h.Max, _ = readUintIn(dir, "hugetlb.", size, ".max_usage_in_bytes")
		h.Failcnt, _ = readUintIn(dir, "hugetlb.", size, ".failcnt")
		out = append(out, h)
	}
	return out
}

// hugeSizes caches the huge page sizes of this kernel's hugetlb files
// ("2MB", "1GB"), found in the listing of the first cgroup that has them:
// they are the kernel's, the same in every cgroup.
var hugeSizes struct {
	sync.Mutex
	sizes []string
}

// hugetlbSizes lists dir's hugetlb.<size>.<file> sizes (file: "current"
// under v2, "usage_in_bytes" under v1), from the cache when it is filled.
func hugetlbSizes(dir, file string) []string {
	hugeSizes.Lock()
	defer hugeSizes.Unlock()
	if hugeSizes.sizes != nil {
		return hugeSizes.sizes
	}
	// A listing, not filepath.Glob: a cgroup's name may hold a pattern's
	// metacharacter (systemd's "\x2d" escape, a '['), and a glob of its
	// path then matches nothing or is refused.
	entries, _ := os.ReadDir(dir)
	var sizes []string
	for _, e := range entries {
		if size, ok := hugetlbSize(e.Name(), file); ok {
			sizes = append(sizes, size)
		}
	}
	if len(sizes) > 0 {
		hugeSizes.sizes = sizes
	}
	return sizes
}

// hugetlbSize is the size of a hugetlb.<size>.<file> name, ok false for
// any other name (hugetlb.<size>.rsvd.<file> among them).
func hugetlbSize(name, file string) (size string, ok bool) {
	size, ok1 := strings.CutPrefix(name, "hugetlb.")
	size, ok2 := strings.CutSuffix(size, "."+file)
	if !ok1 || !ok2 || size == "" || strings.Contains(size, ".") {
		return "", false
	}
	return size, true
}

// hugetlbStats reads every huge page size's hugetlb.<size>.current, .max and
// .events ("max" = allocations refused by the limit, v1's failcnt). A cgroup
// without the hugetlb controller has no such files and gets none.
func hugetlbStats(dir string) []*v2.HugeTlbStat {
	var out []*v2.HugeTlbStat
	for _, size := range hugetlbSizes(dir, "current") {
		cur, err := readUintIn(dir, "hugetlb.", size, ".current")
		if err != nil {
			continue
		}
		h := &v2.HugeTlbStat{Pagesize: size, Current: cur}
		h.Max, _ = readUintIn(dir, "hugetlb.", size, ".max") // "max": the largest value, as containerd's cgroups library has it
		_ = eachKV(func(k []byte, v uint64) {
			if string(k) == "max" {
				h.Failcnt = v
			}
		}, dir, "hugetlb.", size, ".events")
		out = append(out, h)
	}
	return out
}

// ioStats reads io.stat and io.pressure; nil when neither could be read.
// io.pressure is a core file, there without the io controller (which
// io.stat is of): containerd/cgroups reports its PSI then too, and CRI
// takes a container's IO pressure from it.
func ioStats(dir string) *v2.IOStat {
	var usage []*v2.IOEntry
	err := withFileIn(func(data []byte) { usage = ioEntries(data) }, dir, "io.stat")
	psi := readPSI(dir, "io.pressure")
	if err != nil && psi == nil {
		return nil
	}
	return &v2.IOStat{Usage: usage, PSI: psi}
}

// ioEntries parses io.stat lines: "major:minor rbytes=N wbytes=N rios=N wios=N ...".
func ioEntries(data []byte) []*v2.IOEntry {
	var out []*v2.IOEntry
	eachLine(data, func(line []byte) {
		// A device that has done no IO is its name alone ("253:0 "): an
		// entry of zeros, as containerd/cgroups reports it.
		f := bytes.Fields(line)
		if len(f) < 1 {
			return
		}
		maj, min, ok := bytes.Cut(f[0], colon)
		if !ok {
			return
		}
		e := &v2.IOEntry{}
		e.Major, _ = strconv.ParseUint(string(maj), 10, 64)
		e.Minor, _ = strconv.ParseUint(string(min), 10, 64)
		for _, kv := range f[1:] {
			k, v, _ := bytes.Cut(kv, equals)
			n, _ := strconv.ParseUint(string(v), 10, 64)
			switch string(k) {
			case "rbytes":
				e.Rbytes = n
			case "wbytes":
				e.Wbytes = n
			case "rios":
				e.Rios = n
			case "wios":
				e.Wios = n
			}
		}
		out = append(out, e)
	})
	return out
}
