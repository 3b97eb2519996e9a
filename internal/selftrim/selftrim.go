// Package selftrim gives back the memory a long-lived, mostly idle process
// of this binary (the shim daemon, a pod holder) does not need resident: free
// heap, and the pages of its own executable it has stopped using.
package selftrim

import (
	"bufio"
	"os"
	"runtime/debug"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Trim returns free heap to the kernel and unmaps the pages of the
// process's own executable (code and read-only data) from its page tables.
// Those pages stay in the page cache, shared by every shim; the process faults
// back in only what it uses, one page at a time (MADV_RANDOM stops the
// kernel from mapping whole neighbourhoods around each fault).
//
// A mapping holding any anonymous page is left alone: in a position-
// independent build the loader's relocations make private copies of
// read-only pages, and dropping those would revert them to the file.
//
// The order matters twice over: smaps is read first, so that the garbage its
// parsing makes is collected with the rest; and the executable's pages are
// dropped last, after the collection, whose code would otherwise fault them
// back in (on kernels that cache a binary in large folios, a whole folio at
// a time).
//
// It also marks the mappings made since the last call as never to be backed
// by huge pages (NoHugePages).
func Trim() {
	noHugeAnon()
	own := ownReadOnlyMappings()
	debug.FreeOSMemory()
	for _, m := range own {
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
		if strings.Contains(fields[0], "-") && !strings.HasSuffix(fields[0], ":") {
			// A mapping header: "start-end perms offset dev inode [path]".
			cur = nil
			if len(fields) < 6 || fields[5] != self || strings.Contains(fields[1], "w") {
				continue
			}
			if start, end, ok := parseRange(fields[0]); ok && end > start {
				out = append(out, mapping{start, end})
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

// parseRange reads a /proc/<pid>/maps address range, "start-end" in hex.
func parseRange(field string) (start, end uintptr, ok bool) {
	lo, hi, found := strings.Cut(field, "-")
	if !found {
		return 0, 0, false
	}
	s, err1 := strconv.ParseUint(lo, 16, 64)
	e, err2 := strconv.ParseUint(hi, 16, 64)
	return uintptr(s), uintptr(e), found && err1 == nil && err2 == nil
}
