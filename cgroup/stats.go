package cgroup

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	v1 "github.com/containerd/cgroups/v3/cgroup1/stats"
	v2 "github.com/containerd/cgroups/v3/cgroup2/stats"
)

// Type URLs containerd (CRI, its metrics exporter) switches on.
const (
	MetricsV1 = "io.containerd.cgroups.v1.Metrics"
	MetricsV2 = "io.containerd.cgroups.v2.Metrics"
)

// StatsV1 reads a v1 cgroup's statistics. Controllers that are missing are
// left out rather than failing the whole answer.
func (c *Cgroup) StatsV1() (*v1.Metrics, error) {
	m := &v1.Metrics{}
	if d := c.dir("pids"); d != "" {
		cur, err1 := readUint(filepath.Join(d, "pids.current"))
		max, _ := readUint(filepath.Join(d, "pids.max"))
		if err1 == nil {
			if max == ^uint64(0) {
				max = 0 // containerd's convention: 0 means no limit
			}
			m.Pids = &v1.PidsStat{Current: cur, Limit: max}
		}
	}
	if d := c.dir("cpuacct"); d != "" {
		if total, err := readUint(filepath.Join(d, "cpuacct.usage")); err == nil {
			u := &v1.CPUUsage{Total: total}
			if data, err := readString(filepath.Join(d, "cpuacct.usage_percpu")); err == nil {
				for _, f := range strings.Fields(data) {
					if v, err := strconv.ParseUint(f, 10, 64); err == nil {
						u.PerCPU = append(u.PerCPU, v)
					}
				}
			}
			if kv, err := readKV(filepath.Join(d, "cpuacct.stat")); err == nil {
				// Reported in USER_HZ ticks (100 per second on Linux).
				const nsPerTick = 1e9 / 100
				u.User, u.Kernel = kv["user"]*nsPerTick, kv["system"]*nsPerTick
			}
			m.CPU = &v1.CPUStat{Usage: u}
		}
	}
	if d := c.dir("cpu"); d != "" {
		if kv, err := readKV(filepath.Join(d, "cpu.stat")); err == nil {
			if m.CPU == nil {
				m.CPU = &v1.CPUStat{}
			}
			m.CPU.Throttling = &v1.Throttle{Periods: kv["nr_periods"], ThrottledPeriods: kv["nr_throttled"], ThrottledTime: kv["throttled_time"]}
		}
	}
	if d := c.dir("memory"); d != "" {
		if kv, err := readKV(filepath.Join(d, "memory.stat")); err == nil {
			m.Memory = &v1.MemoryStat{
				Cache: kv["cache"], RSS: kv["rss"], RSSHuge: kv["rss_huge"], MappedFile: kv["mapped_file"],
				Dirty: kv["dirty"], Writeback: kv["writeback"], PgPgIn: kv["pgpgin"], PgPgOut: kv["pgpgout"],
				PgFault: kv["pgfault"], PgMajFault: kv["pgmajfault"], InactiveAnon: kv["inactive_anon"],
				ActiveAnon: kv["active_anon"], InactiveFile: kv["inactive_file"], ActiveFile: kv["active_file"],
				Unevictable: kv["unevictable"], HierarchicalMemoryLimit: kv["hierarchical_memory_limit"],
				HierarchicalSwapLimit: kv["hierarchical_memsw_limit"], TotalCache: kv["total_cache"],
				TotalRSS: kv["total_rss"], TotalRSSHuge: kv["total_rss_huge"], TotalMappedFile: kv["total_mapped_file"],
				TotalDirty: kv["total_dirty"], TotalWriteback: kv["total_writeback"], TotalPgPgIn: kv["total_pgpgin"],
				TotalPgPgOut: kv["total_pgpgout"], TotalPgFault: kv["total_pgfault"], TotalPgMajFault: kv["total_pgmajfault"],
				TotalInactiveAnon: kv["total_inactive_anon"], TotalActiveAnon: kv["total_active_anon"],
				TotalInactiveFile: kv["total_inactive_file"], TotalActiveFile: kv["total_active_file"],
				TotalUnevictable: kv["total_unevictable"],
				Usage:            memoryEntry(d, "memory"),
				Swap:             memoryEntry(d, "memory.memsw"),
				Kernel:           memoryEntry(d, "memory.kmem"),
				KernelTCP:        memoryEntry(d, "memory.kmem.tcp"),
			}
		}
		if kv, err := readKV(filepath.Join(d, "memory.oom_control")); err == nil {
			m.MemoryOomControl = &v1.MemoryOomControl{OomKillDisable: kv["oom_kill_disable"], UnderOom: kv["under_oom"], OomKill: kv["oom_kill"]}
		}
	}
	if d := c.dir("blkio"); d != "" {
		b := &v1.BlkIOStat{
			IoServiceBytesRecursive: blkioEntries(filepath.Join(d, "blkio.throttle.io_service_bytes_recursive")),
			IoServicedRecursive:     blkioEntries(filepath.Join(d, "blkio.throttle.io_serviced_recursive")),
		}
		if b.IoServiceBytesRecursive != nil || b.IoServicedRecursive != nil {
			m.Blkio = b
		}
	}
	if m.Pids == nil && m.CPU == nil && m.Memory == nil && m.Blkio == nil {
		return nil, errors.New("cgroup has no readable statistics (was it removed?)")
	}
	return m, nil
}

// memoryEntryFiles are a v1 memory counter's files (after its prefix) and where each goes.
var memoryEntryFiles = [...]struct {
	suffix string
	field  func(*v1.MemoryEntry) *uint64
}{
	{".usage_in_bytes", func(e *v1.MemoryEntry) *uint64 { return &e.Usage }},
	{".max_usage_in_bytes", func(e *v1.MemoryEntry) *uint64 { return &e.Max }},
	{".failcnt", func(e *v1.MemoryEntry) *uint64 { return &e.Failcnt }},
	{".limit_in_bytes", func(e *v1.MemoryEntry) *uint64 { return &e.Limit }},
}

func memoryEntry(dir, prefix string) *v1.MemoryEntry {
	e := &v1.MemoryEntry{}
	var ok bool
	for _, f := range memoryEntryFiles {
		if v, err := readUint(filepath.Join(dir, prefix+f.suffix)); err == nil {
			*f.field(e), ok = v, true
		}
	}
	if !ok {
		return nil
	}
	return e
}

// blkioEntries reads "major:minor Op value" lines; the "Total" line is skipped.
func blkioEntries(path string) []*v1.BlkIOEntry {
	data, err := readString(path)
	if err != nil {
		return nil
	}
	var out []*v1.BlkIOEntry
	for _, line := range strings.Split(data, "\n") {
		f := strings.Fields(line)
		if len(f) != 3 {
			continue
		}
		maj, min, ok := strings.Cut(f[0], ":")
		if !ok {
			continue
		}
		e := &v1.BlkIOEntry{Op: f[1]}
		var err1, err2, err3 error
		e.Major, err1 = strconv.ParseUint(maj, 10, 64)
		e.Minor, err2 = strconv.ParseUint(min, 10, 64)
		e.Value, err3 = strconv.ParseUint(f[2], 10, 64)
		if err1 == nil && err2 == nil && err3 == nil {
			out = append(out, e)
		}
	}
	return out
}

// StatsV2 reads a v2 cgroup's statistics.
func (c *Cgroup) StatsV2() (*v2.Metrics, error) {
	d := c.dir("")
	if _, err := os.Stat(d); err != nil {
		return nil, err
	}
	m := &v2.Metrics{}
	if cur, err := readUint(filepath.Join(d, "pids.current")); err == nil {
		max, _ := readUint(filepath.Join(d, "pids.max"))
		if max == ^uint64(0) {
			max = 0
		}
		m.Pids = &v2.PidsStat{Current: cur, Limit: max}
	}
	if kv, err := readKV(filepath.Join(d, "cpu.stat")); err == nil {
		m.CPU = &v2.CPUStat{UsageUsec: kv["usage_usec"], UserUsec: kv["user_usec"], SystemUsec: kv["system_usec"],
			NrPeriods: kv["nr_periods"], NrThrottled: kv["nr_throttled"], ThrottledUsec: kv["throttled_usec"],
			NrBursts: kv["nr_bursts"], BurstUsec: kv["burst_usec"], PSI: readPSI(filepath.Join(d, "cpu.pressure"))}
	}
	if kv, err := readKV(filepath.Join(d, "memory.stat")); err == nil {
		mem := &v2.MemoryStat{
			Anon: kv["anon"], File: kv["file"], KernelStack: kv["kernel_stack"], Slab: kv["slab"], Sock: kv["sock"],
			Shmem: kv["shmem"], FileMapped: kv["file_mapped"], FileDirty: kv["file_dirty"], FileWriteback: kv["file_writeback"],
			AnonThp: kv["anon_thp"], InactiveAnon: kv["inactive_anon"], ActiveAnon: kv["active_anon"],
			InactiveFile: kv["inactive_file"], ActiveFile: kv["active_file"], Unevictable: kv["unevictable"],
			SlabReclaimable: kv["slab_reclaimable"], SlabUnreclaimable: kv["slab_unreclaimable"],
			Pgfault: kv["pgfault"], Pgmajfault: kv["pgmajfault"], WorkingsetRefault: kv["workingset_refault"],
			WorkingsetActivate: kv["workingset_activate"], WorkingsetNodereclaim: kv["workingset_nodereclaim"],
			Pgrefill: kv["pgrefill"], Pgscan: kv["pgscan"], Pgsteal: kv["pgsteal"], Pgactivate: kv["pgactivate"],
			Pgdeactivate: kv["pgdeactivate"], Pglazyfree: kv["pglazyfree"], Pglazyfreed: kv["pglazyfreed"],
			ThpFaultAlloc: kv["thp_fault_alloc"], ThpCollapseAlloc: kv["thp_collapse_alloc"],
		}
		mem.Usage, _ = readUint(filepath.Join(d, "memory.current"))
		mem.UsageLimit, _ = readUint(filepath.Join(d, "memory.max"))
		mem.SwapUsage, _ = readUint(filepath.Join(d, "memory.swap.current"))
		mem.SwapLimit, _ = readUint(filepath.Join(d, "memory.swap.max"))
		mem.MaxUsage, _ = readUint(filepath.Join(d, "memory.peak"))
		mem.SwapMaxUsage, _ = readUint(filepath.Join(d, "memory.swap.peak"))
		mem.PSI = readPSI(filepath.Join(d, "memory.pressure"))
		m.Memory = mem
	}
	if kv, err := readKV(filepath.Join(d, "memory.events")); err == nil {
		m.MemoryEvents = &v2.MemoryEvents{Low: kv["low"], High: kv["high"], Max: kv["max"], Oom: kv["oom"],
			OomKill: kv["oom_kill"], OomGroupKill: kv["oom_group_kill"]}
	}
	if data, err := readString(filepath.Join(d, "io.stat")); err == nil {
		m.Io = &v2.IOStat{Usage: ioEntries(data), PSI: readPSI(filepath.Join(d, "io.pressure"))}
	}
	m.Hugetlb = hugetlbStats(d)
	return m, nil
}

// readPSI reads a pressure stall file (cpu.pressure, memory.pressure,
// io.pressure): "some avg10=0.12 avg60=0.05 avg300=0.01 total=12345" and the
// same for "full". nil when the kernel has no PSI (CONFIG_PSI off, psi=0).
func readPSI(path string) *v2.PSIStats {
	data, err := readString(path)
	if err != nil {
		return nil
	}
	var out v2.PSIStats
	for _, line := range strings.Split(data, "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		p := &v2.PSIData{}
		for _, kv := range f[1:] {
			k, v, _ := strings.Cut(kv, "=")
			switch k {
			case "avg10":
				p.Avg10, _ = strconv.ParseFloat(v, 64)
			case "avg60":
				p.Avg60, _ = strconv.ParseFloat(v, 64)
			case "avg300":
				p.Avg300, _ = strconv.ParseFloat(v, 64)
			case "total":
				p.Total, _ = strconv.ParseUint(v, 10, 64)
			}
		}
		switch f[0] {
		case "some":
			out.Some = p
		case "full":
			out.Full = p
		}
	}
	if out.Some == nil && out.Full == nil {
		return nil
	}
	return &out
}

// hugetlbStats reads every huge page size's hugetlb.<size>.current, .max and
// .events ("max" = allocations refused by the limit, v1's failcnt).
func hugetlbStats(dir string) []*v2.HugeTlbStat {
	currents, _ := filepath.Glob(filepath.Join(dir, "hugetlb.*.current"))
	var out []*v2.HugeTlbStat
	for _, cur := range currents {
		size := strings.TrimSuffix(strings.TrimPrefix(filepath.Base(cur), "hugetlb."), ".current")
		if strings.Contains(size, ".") { // hugetlb.<size>.rsvd.current
			continue
		}
		h := &v2.HugeTlbStat{Pagesize: size}
		var err error
		if h.Current, err = readUint(cur); err != nil {
			continue
		}
		h.Max, _ = readUint(filepath.Join(dir, "hugetlb."+size+".max"))
		if h.Max == ^uint64(0) {
			h.Max = 0 // containerd's convention: 0 means no limit
		}
		if kv, err := readKV(filepath.Join(dir, "hugetlb."+size+".events")); err == nil {
			h.Failcnt = kv["max"]
		}
		out = append(out, h)
	}
	return out
}

// ioEntries reads io.stat lines: "major:minor rbytes=N wbytes=N rios=N wios=N ...".
func ioEntries(data string) []*v2.IOEntry {
	var out []*v2.IOEntry
	for _, line := range strings.Split(data, "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		maj, min, ok := strings.Cut(f[0], ":")
		if !ok {
			continue
		}
		e := &v2.IOEntry{}
		e.Major, _ = strconv.ParseUint(maj, 10, 64)
		e.Minor, _ = strconv.ParseUint(min, 10, 64)
		for _, kv := range f[1:] {
			k, v, _ := strings.Cut(kv, "=")
			n, _ := strconv.ParseUint(v, 10, 64)
			switch k {
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
	}
	return out
}
