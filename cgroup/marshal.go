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
		w.msg(1, func() { w.uint(1, h.Usage); w.uint(2, h.Max); w.uint(3, h.Failcnt); w.str(4, h.Pagesize) })
	}
	if p := m.Pids; p != nil {
		w.msg(2, func() { w.uint(1, p.Current); w.uint(2, p.Limit) })
	}
	if c := m.CPU; c != nil {
		w.msg(3, func() {
			if u := c.Usage; u != nil {
				w.msg(1, func() { w.uint(1, u.Total); w.uint(2, u.Kernel); w.uint(3, u.User); w.packed(4, u.PerCPU) })
			}
			if t := c.Throttling; t != nil {
				w.msg(2, func() { w.uint(1, t.Periods); w.uint(2, t.ThrottledPeriods); w.uint(3, t.ThrottledTime) })
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
					w.msg(protowire.Number(i+1), func() {
						w.str(1, e.Op)
						w.str(2, e.Device)
						w.uint(3, e.Major)
						w.uint(4, e.Minor)
						w.uint(5, e.Value)
					})
				}
			}
		})
	}
	if r := m.Rdma; r != nil {
		w.msg(6, func() { rdma(w, r.Current, r.Limit) })
	}
	for _, n := range m.Network {
		w.msg(7, func() {
			network(w, n.Name, n.RxBytes, n.RxPackets, n.RxErrors, n.RxDropped, n.TxBytes, n.TxPackets, n.TxErrors, n.TxDropped)
		})
	}
	if s := m.CgroupStats; s != nil {
		w.msg(8, func() {
			w.uint(1, s.NrSleeping)
			w.uint(2, s.NrRunning)
			w.uint(3, s.NrStopped)
			w.uint(4, s.NrUninterruptible)
			w.uint(5, s.NrIoWait)
		})
	}
	if o := m.MemoryOomControl; o != nil {
		w.msg(9, func() { w.uint(1, o.OomKillDisable); w.uint(2, o.UnderOom); w.uint(3, o.OomKill) })
	}
	return w.b
}

func memoryStatV1(w *wire, m *v1.MemoryStat) {
	for i, v := range [...]uint64{m.Cache, m.RSS, m.RSSHuge, m.MappedFile, m.Dirty, m.Writeback, m.PgPgIn,
		m.PgPgOut, m.PgFault, m.PgMajFault, m.InactiveAnon, m.ActiveAnon, m.InactiveFile, m.ActiveFile,
		m.Unevictable, m.HierarchicalMemoryLimit, m.HierarchicalSwapLimit, m.TotalCache, m.TotalRSS,
		m.TotalRSSHuge, m.TotalMappedFile, m.TotalDirty, m.TotalWriteback, m.TotalPgPgIn, m.TotalPgPgOut,
		m.TotalPgFault, m.TotalPgMajFault, m.TotalInactiveAnon, m.TotalActiveAnon, m.TotalInactiveFile,
		m.TotalActiveFile, m.TotalUnevictable} {
		w.uint(protowire.Number(i+1), v) // fields 1-32, in this order
	}
	for i, e := range [...]*v1.MemoryEntry{m.Usage, m.Swap, m.Kernel, m.KernelTCP} {
		if e != nil {
			w.msg(protowire.Number(33+i), func() { w.uint(1, e.Limit); w.uint(2, e.Usage); w.uint(3, e.Max); w.uint(4, e.Failcnt) })
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

// network writes a NetworkStat's fields (the same in v1 and v2).
func network(w *wire, name string, counters ...uint64) {
	w.str(1, name)
	for i, v := range counters {
		w.uint(protowire.Number(i+2), v)
	}
}

// MarshalV2 encodes v2 statistics as proto.Marshal would.
func MarshalV2(m *v2.Metrics) []byte {
	w := &wire{b: make([]byte, 0, 512)}
	if p := m.Pids; p != nil {
		w.msg(1, func() { w.uint(1, p.Current); w.uint(2, p.Limit) })
	}
	if c := m.CPU; c != nil {
		w.msg(2, func() {
			w.uint(1, c.UsageUsec)
			w.uint(2, c.UserUsec)
			w.uint(3, c.SystemUsec)
			w.uint(4, c.NrPeriods)
			w.uint(5, c.NrThrottled)
			w.uint(6, c.ThrottledUsec)
			psi(w, 7, c.PSI)
			w.uint(8, c.NrBursts)
			w.uint(9, c.BurstUsec)
		})
	}
	if mem := m.Memory; mem != nil {
		w.msg(4, func() {
			for i, v := range [...]uint64{mem.Anon, mem.File, mem.KernelStack, mem.Slab, mem.Sock, mem.Shmem,
				mem.FileMapped, mem.FileDirty, mem.FileWriteback, mem.AnonThp, mem.InactiveAnon, mem.ActiveAnon,
				mem.InactiveFile, mem.ActiveFile, mem.Unevictable, mem.SlabReclaimable, mem.SlabUnreclaimable,
				mem.Pgfault, mem.Pgmajfault, mem.WorkingsetRefault, mem.WorkingsetActivate,
				mem.WorkingsetNodereclaim, mem.Pgrefill, mem.Pgscan, mem.Pgsteal, mem.Pgactivate,
				mem.Pgdeactivate, mem.Pglazyfree, mem.Pglazyfreed, mem.ThpFaultAlloc, mem.ThpCollapseAlloc,
				mem.Usage, mem.UsageLimit, mem.SwapUsage, mem.SwapLimit, mem.MaxUsage, mem.SwapMaxUsage} {
				w.uint(protowire.Number(i+1), v) // fields 1-37, in this order
			}
			psi(w, 38, mem.PSI)
		})
	}
	if r := m.Rdma; r != nil {
		w.msg(5, func() { rdma(w, r.Current, r.Limit) })
	}
	if io := m.Io; io != nil {
		w.msg(6, func() {
			for _, e := range io.Usage {
				w.msg(1, func() {
					for i, v := range [...]uint64{e.Major, e.Minor, e.Rbytes, e.Wbytes, e.Rios, e.Wios} {
						w.uint(protowire.Number(i+1), v)
					}
				})
			}
			psi(w, 2, io.PSI)
		})
	}
	for _, h := range m.Hugetlb {
		w.msg(7, func() { w.uint(1, h.Current); w.uint(2, h.Max); w.str(3, h.Pagesize); w.uint(4, h.Failcnt) })
	}
	if e := m.MemoryEvents; e != nil {
		w.msg(8, func() {
			for i, v := range [...]uint64{e.Low, e.High, e.Max, e.Oom, e.OomKill, e.OomGroupKill} {
				w.uint(protowire.Number(i+1), v)
			}
		})
	}
	for _, n := range m.Network {
		w.msg(9, func() {
			network(w, n.Name, n.RxBytes, n.RxPackets, n.RxErrors, n.RxDropped, n.TxBytes, n.TxPackets, n.TxErrors, n.TxDropped)
		})
	}
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
