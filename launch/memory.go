package launch

import (
	"bufio"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Memory tuning of the daemon. Shims are many (one per pod) and mostly
// idle, so what an idle shim keeps resident is what it costs.
const (
	// gcPercent makes the collector run at 30% heap growth instead of 100%:
	// an idle shim's heap is small, so collections are cheap.
	gcPercent = 30
	// trimInterval is how often an idle daemon returns freed memory to the
	// kernel and drops its binary's pages it has stopped using.
	trimInterval = 30 * time.Second
	// maxProcs caps the Go scheduler's Ps: a shim's work is runtime calls and
	// relays, not parallel computation, and every P carries caches. With a
	// second P the scheduler wakes a spinning thread for nearly every
	// goroutine it readies, and those futex wake-ups were a quarter of the
	// shim's CPU per exec probe (CRI ExecSync: 1.6-1.9 ms instead of 2.3-2.7
	// per probe, 1 vs 2).
	maxProcs = 1
)

// tuneMemory applies the runtime settings above; call it first in the daemon.
func tuneMemory() {
	debug.SetGCPercent(gcPercent)
	if runtime.GOMAXPROCS(0) > maxProcs {
		runtime.GOMAXPROCS(maxProcs)
	}
}

// trimMemory returns free heap to the kernel and unmaps the pages of the
// shim's own executable (code and read-only data) from its page tables.
// Those pages stay in the page cache, shared by every shim; the daemon faults
// back in only what it uses, one page at a time (MADV_RANDOM stops the
// kernel from mapping whole neighbourhoods around each fault).
//
// A mapping holding any anonymous page is left alone: in a position-
// independent build the loader's relocations make private copies of
// read-only pages, and dropping those would revert them to the file.
func trimMemory() {
	debug.FreeOSMemory()
	for _, m := range ownReadOnlyMappings() {
		// Newer kernels keep a freshly read or copied binary in the page
		// cache as 2 MiB folios and map each with one PMD entry: without
		// NOHUGEPAGE the first fault after the trim maps all 2 MiB again.
		madvise(m.start, m.end-m.start, unix.MADV_NOHUGEPAGE)
		madvise(m.start, m.end-m.start, unix.MADV_RANDOM)
		madvise(m.start, m.end-m.start, unix.MADV_DONTNEED)
	}
}

type mapping struct{ start, end uintptr }

// ownReadOnlyMappings lists the non-writable mappings of the executable that
// hold no anonymous (copied-on-write) pages, from /proc/self/smaps.
func ownReadOnlyMappings() []mapping {
	self, err := os.Executable()
	if err != nil {
		return nil
	}
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []mapping
	var cur *mapping
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) == 0 {
			continue
		}
		if lo, hi, ok := strings.Cut(fields[0], "-"); ok && !strings.HasSuffix(fields[0], ":") {
			// A mapping header: "start-end perms offset dev inode [path]".
			cur = nil
			if len(fields) < 6 || fields[5] != self || strings.Contains(fields[1], "w") {
				continue
			}
			start, err1 := strconv.ParseUint(lo, 16, 64)
			end, err2 := strconv.ParseUint(hi, 16, 64)
			if err1 == nil && err2 == nil && end > start {
				out = append(out, mapping{uintptr(start), uintptr(end)})
				cur = &out[len(out)-1]
			}
			continue
		}
		if cur != nil && fields[0] == "Anonymous:" && len(fields) >= 2 && fields[1] != "0" {
			out = out[:len(out)-1] // has private copies: keep it as it is
			cur = nil
		}
	}
	return out
}

// madvise advises the kernel on one of this process's own mappings, given by
// address (the unix package only takes a slice, which would need unsafe).
func madvise(addr, length uintptr, advice int) {
	_, _, _ = unix.Syscall(unix.SYS_MADVISE, addr, length, uintptr(advice))
}

// trimmer decides when the daemon trims its memory: quietPeriod after the
// last request of a burst (so a shim that has just created its container is
// lean within seconds, not after trimInterval), and at least every
// trimInterval while requests keep coming or output keeps flowing. An idle
// daemon with nothing new to trim wakes only every trimInterval.
type trimmer struct {
	touched chan struct{} // a request arrived; buffered, one pending is enough
	trim    func()        // trimMemory; replaced in tests
}

// quietPeriod is how long the daemon waits after a request before trimming.
const quietPeriod = 2 * time.Second

func newTrimmer() *trimmer {
	return &trimmer{touched: make(chan struct{}, 1), trim: trimMemory}
}

// Touch records a request. It never blocks: one pending touch says all.
func (t *trimmer) Touch() {
	select {
	case t.touched <- struct{}{}:
	default:
	}
}

// Run trims until stop is closed. Only Run's goroutine owns the timer.
func (t *trimmer) Run(stop <-chan struct{}, quiet, interval time.Duration) {
	lastTrim := time.Now()
	timer := time.NewTimer(quiet)
	defer timer.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.touched:
			// Trim after a quiet spell, but never later than the interval
			// after the last trim: a steady trickle of requests must not
			// postpone it forever.
			due := time.Now().Add(quiet)
			if limit := lastTrim.Add(interval); limit.Before(due) {
				due = limit
			}
			timer.Reset(time.Until(due))
		case <-timer.C:
			t.trim()
			lastTrim = time.Now()
			timer.Reset(interval)
		}
	}
}
