package cgroup

import (
	"math"

	v1 "github.com/containerd/cgroups/v3/cgroup1/stats"
	v2 "github.com/containerd/cgroups/v3/cgroup2/stats"
	"google.golang.org/protobuf/encoding/protowire"
)

// The statistics go to containerd as protobuf bytes in an Any. They are
// encoded here from the generated structs' fields, not by proto.Marshal:
// the first proto.Marshal of a Metrics builds the full descriptors of the
// cgroups' metrics.proto and a coder for every message type in it (about
// 115 KB of heap that every shim polled for metrics kept for its life:
// containerd 2.4's CRI asks every pod and container once a second), and
// each later call walks them by reflection. The bytes are the same as
// proto.Marshal's (TestMarshalMatchesProto fills every field and compares):
// fields in number order, proto3 zero values left out.

// Metrics reads the cgroup's statistics (v1 or v2) and encodes them for an
// Any whose type URL it returns along.
func (c *Cgroup) Metrics() (data []byte, typeURL string, err error) {
	if c.V2 {
		m, err := c.StatsV2()
		if err != nil {
			return nil, "", err
		}
		return MarshalV2(m), MetricsV2, nil
	}
	m, err := c.StatsV1()
	if err != nil {
		return nil, "", err
	}
	return MarshalV1(m), MetricsV1, nil
}

// wire appends protobuf fields to b.
type wire struct{ b []byte }

func (w *wire) uint(num protowire.Number, v uint64) {
	if v != 0 {
		w.b = protowire.AppendTag(w.b, num, protowire.VarintType)
		w.b = protowire.AppendVarint(w.b, v)
	}
}

func (w *wire) str(num protowire.Number, s string) {
	if s != "" {
		w.b = protowire.AppendTag(w.b, num, protowire.BytesType)
		w.b = protowire.AppendString(w.b, s)
	}
}

// uints writes consecutive uint64 fields, numbered from first: most
// statistics messages are runs of counters.
func (w *wire) uints(first protowire.Number, vs ...uint64) {
	for i, v := range vs {
		w.uint(first+protowire.Number(i), v)
	}
}

// double writes a float64; like protobuf-go, only +0.0 counts as unset.
func (w *wire) double(num protowire.Number, v float64) {
	if bits := math.Float64bits(v); bits != 0 {
		w.b = protowire.AppendTag(w.b, num, protowire.Fixed64Type)
		w.b = protowire.AppendFixed64(w.b, bits)
	}
}

// packed writes a repeated uint64 field in packed form (proto3's default).
func (w *wire) packed(num protowire.Number, vs []uint64) {
	if len(vs) == 0 {
		return
	}
	n := 0
	for _, v := range vs {
		n += protowire.SizeVarint(v)
	}
	w.b = protowire.AppendTag(w.b, num, protowire.BytesType)
	w.b = protowire.AppendVarint(w.b, uint64(n))
	for _, v := range vs {
		w.b = protowire.AppendVarint(w.b, v)
	}
}

// msg writes a submessage whose fields body appends. Its length is not
// known before: one byte is reserved for it and the body moved along in the
// rare case it needs more.
func (w *wire) msg(num protowire.Number, body func()) {
	w.b = protowire.AppendTag(w.b, num, protowire.BytesType)
	at := len(w.b)
	w.b = append(w.b, 0)
	body()
	n := len(w.b) - at - 1
	if n < 0x80 {
		w.b[at] = byte(n)
		return
	}
	extra := protowire.SizeVarint(uint64(n)) - 1
	w.b = append(w.b, make([]byte, extra)...)
	copy(w.b[at+1+extra:], w.b[at+1:at+1+n])
	protowire.AppendVarint(w.b[at:at], uint64(n))
}

// MarshalV1 encodes v1 statistics as proto.Marshal would.
func MarshalV1(m *v1.Metrics) []byte {
	w := &wire{b: make([]byte, 0, 512)}
	for _, h := range m.Hugetlb {
		w.msg(1, func() { w.uints(1, h.Usage, h.Max, h.Failcnt); w.str(4, h.Pagesize) })
	}
	if p := m.Pids; p != nil {
		w.msg(2, func() { w.uints(1, p.Current, p.Limit) })
	}
	if c := m.CPU; c != nil {
		w.msg(3, func() {
			if u := c.Usage; u != nil {
				w.msg(1, func() { w.uints(1, u.Total, u.Kernel, u.User); w.packed(4, u.PerCPU) })
			}
			if t := c.Throttling; t != nil {
				w.msg(2, func() { w.uints(1, t.Periods, t.ThrottledPeriods, t.ThrottledTime) })
			}
		})
	}
	if mem := m.Memory; mem != nil {
		w.msg(4, func() { memoryStatV1(w, mem) })
	}
	if b := m.Blkio; b != nil {
		w.msg(5, func() {
			for i, list := range [][]*v1.BlkIOEntry{b.IoServiceBytesRecursive, b.IoServicedRecursive,
				b.IoQueuedRecursive, b.IoServiceTimeRecursive, b.IoWaitTimeRecursive, b.IoMergedRecursive,
				b.IoTimeRecursive, b.SectorsRecursive} {
				for _, e := range list {
					w.msg(protowire.Number(i+1), func() { w.str(1, e.Op); w.str(2, e.Device); w.uints(3, e.Major, e.Minor, e.Value) })
				}
			}
		})
	}
	if r := m.Rdma; r != nil {
		w.msg(6, func() { rdma(w, r.Current, r.Limit) })
	}
	networks(w, 7, m.Network)
	if s := m.CgroupStats; s != nil {
		w.msg(8, func() { w.uints(1, s.NrSleeping, s.NrRunning, s.NrStopped, s.NrUninterruptible, s.NrIoWait) })
	}
	if o := m.MemoryOomControl; o != nil {
		w.msg(9, func() { w.uints(1, o.OomKillDisable, o.UnderOom, o.OomKill) })
	}
	return w.b
}

func memoryStatV1(w *wire, m *v1.MemoryStat) {
	w.uints(1, m.Cache, m.RSS, m.RSSHuge, m.MappedFile, m.Dirty, m.Writeback, m.PgPgIn,
		m.PgPgOut, m.PgFault, m.PgMajFault, m.InactiveAnon, m.ActiveAnon, m.InactiveFile, m.ActiveFile,
		m.Unevictable, m.HierarchicalMemoryLimit, m.HierarchicalSwapLimit, m.TotalCache, m.TotalRSS,
		m.TotalRSSHuge, m.TotalMappedFile, m.TotalDirty, m.TotalWriteback, m.TotalPgPgIn, m.TotalPgPgOut,
		m.TotalPgFault, m.TotalPgMajFault, m.TotalInactiveAnon, m.TotalActiveAnon, m.TotalInactiveFile,
		m.TotalActiveFile, m.TotalUnevictable) // fields 1-32
	for i, e := range [...]*v1.MemoryEntry{m.Usage, m.Swap, m.Kernel, m.KernelTCP} {
		if e != nil {
			w.msg(protowire.Number(33+i), func() { w.uints(1, e.Limit, e.Usage, e.Max, e.Failcnt) })
		}
	}
}

// rdma writes an RdmaStat's two entry lists (the same fields in v1 and v2).
func rdma[E interface {
	GetDevice() string
	GetHcaHandles() uint32
	GetHcaObjects() uint32
}](w *wire, current, limit []E) {
	for i, list := range [2][]E{current, limit} {
		for _, e := range list {
			w.msg(protowire.Number(i+1), func() {
				w.str(1, e.GetDevice())
				w.uint(2, uint64(e.GetHcaHandles()))
				w.uint(3, uint64(e.GetHcaObjects()))
			})
		}
	}
}

// networks writes NetworkStat entries (the same fields in v1 and v2).
func networks[N interface {
	GetName() string
	GetRxBytes() uint64
	GetRxPackets() uint64
	GetRxErrors() uint64
	GetRxDropped() uint64
	GetTxBytes() uint64
	GetTxPackets() uint64
	GetTxErrors() uint64
	GetTxDropped() uint64
}](w *wire, num protowire.Number, list []N) {
	for _, n := range list {
		w.msg(num, func() {
			w.str(1, n.GetName())
			w.uints(2, n.GetRxBytes(), n.GetRxPackets(), n.GetRxErrors(), n.GetRxDropped(),
				n.GetTxBytes(), n.GetTxPackets(), n.GetTxErrors(), n.GetTxDropped())
		})
	}
}

// MarshalV2 encodes v2 statistics as proto.Marshal would.
func MarshalV2(m *v2.Metrics) []byte {
	w := &wire{b: make([]byte, 0, 512)}
	if p := m.Pids; p != nil {
		w.msg(1, func() { w.uints(1, p.Current, p.Limit) })
	}
	if c := m.CPU; c != nil {
		w.msg(2, func() {
			w.uints(1, c.UsageUsec, c.UserUsec, c.SystemUsec, c.NrPeriods, c.NrThrottled, c.ThrottledUsec)
			psi(w, 7, c.PSI)
			w.uints(8, c.NrBursts, c.BurstUsec)
		})
	}
	if mem := m.Memory; mem != nil {
		w.msg(4, func() {
			w.uints(1, mem.Anon, mem.File, mem.KernelStack, mem.Slab, mem.Sock, mem.Shmem,
				mem.FileMapped, mem.FileDirty, mem.FileWriteback, mem.AnonThp, mem.InactiveAnon, mem.ActiveAnon,
				mem.InactiveFile, mem.ActiveFile, mem.Unevictable, mem.SlabReclaimable, mem.SlabUnreclaimable,
				mem.Pgfault, mem.Pgmajfault, mem.WorkingsetRefault, mem.WorkingsetActivate,
				mem.WorkingsetNodereclaim, mem.Pgrefill, mem.Pgscan, mem.Pgsteal, mem.Pgactivate,
				mem.Pgdeactivate, mem.Pglazyfree, mem.Pglazyfreed, mem.ThpFaultAlloc, mem.ThpCollapseAlloc,
				mem.Usage, mem.UsageLimit, mem.SwapUsage, mem.SwapLimit, mem.MaxUsage, mem.SwapMaxUsage) // fields 1-37
			psi(w, 38, mem.PSI)
		})
	}
	if r := m.Rdma; r != nil {
		w.msg(5, func() { rdma(w, r.Current, r.Limit) })
	}
	if io := m.Io; io != nil {
		w.msg(6, func() {
			for _, e := range io.Usage {
				w.msg(1, func() { w.uints(1, e.Major, e.Minor, e.Rbytes, e.Wbytes, e.Rios, e.Wios) })
			}
			psi(w, 2, io.PSI)
		})
	}
	for _, h := range m.Hugetlb {
		w.msg(7, func() { w.uints(1, h.Current, h.Max); w.str(3, h.Pagesize); w.uint(4, h.Failcnt) })
	}
	if e := m.MemoryEvents; e != nil {
		w.msg(8, func() { w.uints(1, e.Low, e.High, e.Max, e.Oom, e.OomKill, e.OomGroupKill) })
	}
	networks(w, 9, m.Network)
	return w.b
}

func psi(w *wire, num protowire.Number, p *v2.PSIStats) {
	if p == nil {
		return
	}
	w.msg(num, func() {
		for i, d := range [...]*v2.PSIData{p.Some, p.Full} {
			if d != nil {
				w.msg(protowire.Number(i+1), func() {
					w.double(1, d.Avg10)
					w.double(2, d.Avg60)
					w.double(3, d.Avg300)
					w.uint(4, d.Total)
				})
			}
		}
	})
}
