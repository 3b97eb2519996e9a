package cgroup

import (
	"math"
	"path/filepath"
	"slices"
	"testing"

	cgroupsv1 "github.com/containerd/cgroups/v3/cgroup1/stats"
	cgroupsv2 "github.com/containerd/cgroups/v3/cgroup2/stats"
)

// Statistics as containerd/cgroups reads the same files (the stock shim's
// numbers), where they used to differ. (From a review, which compared with
// containerd/cgroups v3.1.3 on the same fake directories.)

// A negative counter (some kernels print them in memory.stat) is 0, not
// 2^64-1.
func TestNegativeCounterIsZero(t *testing.T) {
	root := t.TempDir()
	write(t, root, "cgroup.controllers", "memory\n")
	cg, err := Parse(root, []byte("0::/c1\n"), true)
	if err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(root, "c1"), "memory.stat", "anon 4096\nfile -8192\n")
	m, err := cg.StatsV2()
	if err != nil {
		t.Fatal(err)
	}
	if m.Memory.Anon != 4096 || m.Memory.File != 0 {
		t.Errorf("memory.stat anon 4096, file -8192: got anon %d, file %d; want 4096, 0", m.Memory.Anon, m.Memory.File)
	}
	for _, s := range []string{"-1", "-99999999999999999999"} {
		if v, err := parseUint(s); err != nil || v != 0 {
			t.Errorf("parseUint(%q) = %d, %v; want 0", s, v, err)
		}
	}
}

// A v2 device that has done no IO is listed by io.stat with its number
// alone: an entry of zeros.
func TestIOStatDeviceWithoutIO(t *testing.T) {
	got := ioEntries([]byte("8:0 rbytes=4096 wbytes=0 rios=1 wios=0 dbytes=0 dios=0\n253:0 \n"))
	if len(got) != 2 || got[1].Major != 253 || got[1].Rbytes != 0 || got[0].Rbytes != 4096 {
		t.Errorf("entries %v; want 8:0 with 4096 read bytes and 253:0 with none", got)
	}
}

// v1 blkio: the CFQ scheduler's files where the kernel has them, the
// non-recursive throttle files where it has no recursive ones, each entry
// named as /proc/partitions names its device; and v1 hugetlb.
func TestStatsV1BlkioAndHugetlbAsContainerd(t *testing.T) {
	proc := t.TempDir()
	write(t, proc, "partitions", "major minor  #blocks  name\n\n   8        0   10485760 sda\n 253        0    1048576 dm-0\n")
	defer func(d string) { procDir = d }(procDir)
	procDir = proc

	t.Run("cfq", func(t *testing.T) {
		root := t.TempDir()
		cg, err := Parse(root, []byte("8:blkio:/c\n"), false)
		if err != nil {
			t.Fatal(err)
		}
		d := filepath.Join(root, "blkio/c")
		write(t, d, "blkio.io_serviced_recursive", "8:0 Read 3\n8:0 Write 1\nTotal 4\n")
		write(t, d, "blkio.io_service_bytes_recursive", "8:0 Read 12288\n8:0 Write 4096\nTotal 16384\n")
		write(t, d, "blkio.sectors_recursive", "8:0 32\n")
		write(t, d, "blkio.time_recursive", "8:0 5\n")
		for _, f := range []string{"io_queued", "io_service_time", "io_wait_time", "io_merged"} {
			write(t, d, "blkio."+f+"_recursive", "Total 0\n")
		}
		write(t, d, "blkio.throttle.io_service_bytes_recursive", "8:0 Read 1\nTotal 1\n") // not read: CFQ's are
		m, err := cg.StatsV1()
		if err != nil {
			t.Fatal(err)
		}
		b := m.Blkio
		if b == nil || len(b.IoServicedRecursive) != 2 || len(b.IoServiceBytesRecursive) != 2 || b.IoServiceBytesRecursive[0].Value != 12288 {
			t.Fatalf("blkio %+v: want CFQ's io_serviced and io_service_bytes", b)
		}
		if len(b.SectorsRecursive) != 1 || b.SectorsRecursive[0].Value != 32 || b.SectorsRecursive[0].Op != "" ||
			len(b.IoTimeRecursive) != 1 || b.IoTimeRecursive[0].Value != 5 {
			t.Errorf("sectors %v, time %v: want 32 and 5, no op", b.SectorsRecursive, b.IoTimeRecursive)
		}
		if dev := b.IoServicedRecursive[0].Device; dev != "/dev/sda" {
			t.Errorf("device %q, want /dev/sda", dev)
		}
	})

	t.Run("throttle-not-recursive", func(t *testing.T) {
		root := t.TempDir()
		cg, err := Parse(root, []byte("8:blkio:/c\n"), false)
		if err != nil {
			t.Fatal(err)
		}
		d := filepath.Join(root, "blkio/c")
		write(t, d, "blkio.throttle.io_service_bytes", "253:0 Read 4096\n253:0 Write 512\nTotal 4608\n")
		write(t, d, "blkio.throttle.io_serviced", "253:0 Read 1\n253:0 Write 1\nTotal 2\n")
		m, err := cg.StatsV1()
		if err != nil {
			t.Fatalf("only the non-recursive throttle files: %v", err)
		}
		b := m.Blkio
		if b == nil || len(b.IoServiceBytesRecursive) != 2 || len(b.IoServicedRecursive) != 2 || b.IoServiceBytesRecursive[0].Device != "/dev/dm-0" {
			t.Errorf("blkio %+v: want both throttle files' entries, on /dev/dm-0", b)
		}
	})

	t.Run("hugetlb", func(t *testing.T) {
		root := t.TempDir()
		cg, err := Parse(root, []byte("9:memory:/c\n7:hugetlb:/c\n"), false)
		if err != nil {
			t.Fatal(err)
		}
		write(t, filepath.Join(root, "memory/c"), "memory.stat", "cache 0\nrss 4096\n")
		h := filepath.Join(root, "hugetlb/c")
		for _, size := range []string{"2MB", "1GB"} {
			write(t, h, "hugetlb."+size+".usage_in_bytes", "2097152\n")
			write(t, h, "hugetlb."+size+".max_usage_in_bytes", "4194304\n")
			write(t, h, "hugetlb."+size+".failcnt", "3\n")
			write(t, h, "hugetlb."+size+".rsvd.usage_in_bytes", "0\n")
		}
		m, err := cg.StatsV1()
		if err != nil {
			t.Fatal(err)
		}
		if len(m.Hugetlb) != 2 {
			t.Fatalf("hugetlb %v: want the 2MB and 1GB pages", m.Hugetlb)
		}
		for _, s := range m.Hugetlb {
			if s.Usage != 2097152 || s.Max != 4194304 || s.Failcnt != 3 || (s.Pagesize != "2MB" && s.Pagesize != "1GB") {
				t.Errorf("hugetlb %+v", s)
			}
		}
	})
}

// The rdma controller's figures, from rdma.current and rdma.max, each
// device's line ("max" is the largest uint32), under both versions; a line
// of another shape is skipped.
func TestStatsRdmaAsContainerd(t *testing.T) {
	const current = "mlx5_0 hca_handle=2 hca_object=2000\nmlx5_1 hca_handle=0 hca_object=0\nbad line\n"
	const limit = "mlx5_0 hca_handle=max hca_object=max\nmlx5_1 hca_handle=10 hca_object=max\n"
	wantCurrent := [][3]any{{"mlx5_0", uint32(2), uint32(2000)}, {"mlx5_1", uint32(0), uint32(0)}}
	wantLimit := [][3]any{{"mlx5_0", uint32(math.MaxUint32), uint32(math.MaxUint32)}, {"mlx5_1", uint32(10), uint32(math.MaxUint32)}}
	t.Run("v2", func(t *testing.T) {
		root := t.TempDir()
		write(t, root, "cgroup.controllers", "cpu rdma\n")
		cg, err := Parse(root, []byte("0::/c1\n"), true)
		if err != nil {
			t.Fatal(err)
		}
		d := filepath.Join(root, "c1")
		write(t, d, "cpu.stat", "usage_usec 1\n")
		m, err := cg.StatsV2()
		if err != nil || m.Rdma != nil {
			t.Fatalf("without the rdma controller: rdma %v (%v), want none", m.GetRdma(), err)
		}
		write(t, d, "rdma.current", current)
		write(t, d, "rdma.max", limit)
		var got cgroupsv2.Metrics
		decodeMetrics(t, cg, MetricsV2, &got)
		checkRdma(t, got.GetRdma().GetCurrent(), wantCurrent)
		checkRdma(t, got.GetRdma().GetLimit(), wantLimit)
	})
	t.Run("v1", func(t *testing.T) {
		root := t.TempDir()
		cg, err := Parse(root, []byte("12:pids:/c1\n5:rdma:/c1\n"), false)
		if err != nil {
			t.Fatal(err)
		}
		write(t, filepath.Join(root, "pids/c1"), "pids.current", "1\n")
		d := filepath.Join(root, "rdma/c1")
		write(t, d, "rdma.current", current)
		write(t, d, "rdma.max", limit)
		var got cgroupsv1.Metrics
		decodeMetrics(t, cg, MetricsV1, &got)
		checkRdma(t, got.GetRdma().GetCurrent(), wantCurrent)
		checkRdma(t, got.GetRdma().GetLimit(), wantLimit)
		// A device gone between the two reads.
		write(t, d, "rdma.max", "mlx5_0 hca_handle=max hca_object=max\n")
		if m, err := cg.StatsV1(); err != nil || m.Rdma != nil {
			t.Errorf("rdma.current and rdma.max of different devices: rdma %v (%v), want none", m.GetRdma(), err)
		}
	})
}

// rdmaEntry is what checkRdma compares of either version's entries.
type rdmaEntry interface {
	GetDevice() string
	GetHcaHandles() uint32
	GetHcaObjects() uint32
}

// checkRdma compares entries with want's device, handles and objects.
func checkRdma[E rdmaEntry](t *testing.T, entries []E, want [][3]any) {
	t.Helper()
	var got [][3]any
	for _, e := range entries {
		got = append(got, [3]any{e.GetDevice(), e.GetHcaHandles(), e.GetHcaObjects()})
	}
	if !slices.Equal(got, want) {
		t.Errorf("rdma entries %v, want %v", got, want)
	}
}

// io.pressure without io.stat (a cgroup whose parent does not give it the
// io controller): the io section with the PSI alone.
func TestStatsV2IOPressureWithoutTheIOController(t *testing.T) {
	root := t.TempDir()
	write(t, root, "cgroup.controllers", "cpu memory pids\n")
	cg, err := Parse(root, []byte("0::/c1\n"), true)
	if err != nil {
		t.Fatal(err)
	}
	d := filepath.Join(root, "c1")
	write(t, d, "cpu.stat", "usage_usec 1\n")
	if m, err := cg.StatsV2(); err != nil || m.Io != nil {
		t.Fatalf("neither io.stat nor io.pressure: io %v (%v), want none", m.GetIo(), err)
	}
	write(t, d, "io.pressure", "some avg10=9.99 avg60=0.00 avg300=0.00 total=7\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=6\n")
	var m cgroupsv2.Metrics
	decodeMetrics(t, cg, MetricsV2, &m)
	if p := m.GetIo().GetPSI(); p.GetSome().GetAvg10() != 9.99 || p.GetSome().GetTotal() != 7 || p.GetFull().GetTotal() != 6 || len(m.GetIo().GetUsage()) != 0 {
		t.Errorf("io %v: want io.pressure's PSI (some avg10 9.99 total 7, full total 6) and no usage", m.GetIo())
	}
}

// The huge page sizes are found in a cgroup whose name holds a glob
// pattern's metacharacter: a systemd-escaped unit name ("\x2d"), a '['.
func TestStatsV2HugetlbInACgroupNamedWithAGlobMetacharacter(t *testing.T) {
	for _, name := range []string{`app-x\x2dy.scope`, `c[1`} {
		forgetHugeSizes(t)
		root := t.TempDir()
		write(t, root, "cgroup.controllers", "cpu hugetlb\n")
		cg, err := Parse(root, []byte("0::/"+name+"\n"), true)
		if err != nil {
			t.Fatal(err)
		}
		d := filepath.Join(root, name)
		write(t, d, "cpu.stat", "usage_usec 1\n")
		write(t, d, "hugetlb.2MB.current", "2097152\n")
		write(t, d, "hugetlb.2MB.max", "max\n")
		write(t, d, "hugetlb.2MB.events", "max 1\n")
		write(t, d, "hugetlb.2MB.rsvd.current", "0\n")
		m, err := cg.StatsV2()
		if err != nil {
			t.Fatal(err)
		}
		if len(m.Hugetlb) != 1 || m.Hugetlb[0].Pagesize != "2MB" || m.Hugetlb[0].Current != 2097152 || m.Hugetlb[0].Failcnt != 1 {
			t.Errorf("cgroup %q: hugetlb %v, want the 2MB pages (current 2097152, failcnt 1)", name, m.Hugetlb)
		}
	}
}

// forgetHugeSizes empties the cache of huge page sizes, now and after the
// test: the sizes a test finds are those of its own files, not those an
// earlier test left (a shim finds them once, in its first cgroup).
func forgetHugeSizes(t *testing.T) {
	forget := func() {
		hugeSizes.Lock()
		hugeSizes.sizes = nil
		hugeSizes.Unlock()
	}
	forget()
	t.Cleanup(forget)
}
