//go:build memdebug

// A debug build (`make build-memdebug`) for finding where a shim's memory
// goes. Install it as the shim (SHIM_BINARY for the integration harness and
// the benchmark), with GODEBUG=memprofilerate=1 in containerd's environment
// (it passes its own on to the shims) to sample every allocation, then
// `kill -USR2 <shim pid>` writes, after a garbage collection:
//
//	/tmp/example-shim-<pid>.heap     a heap profile (go tool pprof -sample_index=inuse_space)
//	/tmp/example-shim-<pid>.metrics  the runtime's memory classes, size classes in
//	                                 use, smaps_rollup, the runtime's persistent
//	                                 metadata chunks and, per anonymous mapping,
//	                                 the resident pages of each 64 KiB (pagemap)
//	/tmp/example-shim-<pid>.goroutines  the goroutines, grouped by stack, and
//	                                    where its threads were created
//	/tmp/example-shim-<pid>.smaps       /proc/self/smaps at that moment
//
// With EXAMPLE_MEMDEBUG_AFTER=<duration> in the environment, it also writes
// them once, that long after the start (for a benchmark row that measures a
// shim and stops it before anyone could signal it).
//
// It reads one runtime variable through go:linkname, hence the build's
// -checklinkname=0. Never part of a release build.
package main

import (
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"runtime/pprof"
	"strings"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

func init() {
	// main.go turned sampling off; GODEBUG=memprofilerate=1 sampled every
	// allocation of the package inits before that, and this keeps going.
	if strings.Contains(os.Getenv("GODEBUG"), "memprofilerate=") {
		runtime.MemProfileRate = 1
	}
	if d, err := time.ParseDuration(os.Getenv("EXAMPLE_MEMDEBUG_AFTER")); err == nil {
		time.AfterFunc(d, writeMemDebug)
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, unix.SIGUSR2)
	go func() {
		for range sigs {
			writeMemDebug()
		}
	}()
}

//go:linkname persistentChunks runtime.persistentChunks
var persistentChunks unsafe.Pointer

func writeMemDebug() {
	runtime.GC()
	debug.FreeOSMemory()
	base := fmt.Sprintf("/tmp/example-shim-%d", os.Getpid())
	// Metrics first: writing the profile allocates (compression state).
	var samples []metrics.Sample
	for _, d := range metrics.All() {
		if strings.HasPrefix(d.Name, "/memory/classes/") || d.Name == "/sched/goroutines:goroutines" ||
			strings.HasPrefix(d.Name, "/gc/heap/") || strings.HasPrefix(d.Name, "/gc/stack/") || strings.HasPrefix(d.Name, "/gc/cycles/") {
			samples = append(samples, metrics.Sample{Name: d.Name})
		}
	}
	metrics.Read(samples)
	var b strings.Builder
	for _, s := range samples {
		switch s.Value.Kind() {
		case metrics.KindUint64:
			fmt.Fprintf(&b, "%s %d\n", s.Name, s.Value.Uint64())
		case metrics.KindFloat64:
			fmt.Fprintf(&b, "%s %g\n", s.Name, s.Value.Float64())
		}
	}
	if rollup, err := os.ReadFile("/proc/self/smaps_rollup"); err == nil {
		b.Write(rollup)
	}
	for c := persistentChunks; c != nil; c = *(*unsafe.Pointer)(c) {
		fmt.Fprintf(&b, "persistent chunk %x\n", uintptr(c))
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	used := 0
	for _, c := range ms.BySize {
		if c.Mallocs > 0 {
			used++
			fmt.Fprintf(&b, "size class %d: mallocs %d live %d\n", c.Size, c.Mallocs, c.Mallocs-c.Frees)
		}
	}
	fmt.Fprintf(&b, "size classes used: %d of %d; GCSys %d OtherSys %d MSpanSys %d BuckHashSys %d StackSys %d\n", used, len(ms.BySize), ms.GCSys, ms.OtherSys, ms.MSpanSys, ms.BuckHashSys, ms.StackSys)
	residentMap(&b)
	_ = os.WriteFile(base+".metrics", []byte(b.String()), 0o644)
	if f, err := os.Create(base + ".heap"); err == nil {
		_ = pprof.Lookup("heap").WriteTo(f, 0)
		f.Close()
	}
	if smaps, err := os.ReadFile("/proc/self/smaps"); err == nil {
		_ = os.WriteFile(base+".smaps", smaps, 0o644)
	}
	if f, err := os.Create(base + ".goroutines"); err == nil {
		_ = pprof.Lookup("goroutine").WriteTo(f, 1)
		_ = pprof.Lookup("threadcreate").WriteTo(f, 1)
		f.Close()
	}
}

// residentMap prints, for every anonymous mapping, how many of its pages are
// resident in each 64 KiB block (from /proc/self/pagemap).
func residentMap(b *strings.Builder) {
	maps, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		return
	}
	pm, err := os.Open("/proc/self/pagemap")
	if err != nil {
		return
	}
	defer pm.Close()
	for _, line := range strings.Split(string(maps), "\n") {
		f := strings.Fields(line)
		if len(f) < 5 || !strings.HasPrefix(f[1], "rw") {
			continue
		}
		var lo, hi uint64
		fmt.Sscanf(f[0], "%x-%x", &lo, &hi)
		if hi-lo > 64<<20 {
			continue
		}
		n := (hi - lo) / 4096
		buf := make([]byte, n*8)
		if _, err := pm.ReadAt(buf, int64(lo/4096*8)); err != nil {
			continue
		}
		total := 0
		var blocks []string
		for blk := uint64(0); blk < n; blk += 16 {
			c := 0
			for i := blk; i < blk+16 && i < n; i++ {
				e := uint64(buf[i*8]) | uint64(buf[i*8+7])<<56
				if e&(1<<63) != 0 {
					c++
				}
			}
			total += c
			if c > 0 {
				blocks = append(blocks, fmt.Sprintf("%x:%d", lo+blk*4096, c))
			}
		}
		fmt.Fprintf(b, "map %s %s resident %d KiB: %s\n", f[0], strings.Join(f[5:], " "), total*4, strings.Join(blocks, " "))
	}
}
