package holder

import (
	"bufio"
	"os"
	"runtime/debug"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// trim gives back what the holder needed only to start: free heap, and the
// pages of its own executable (the whole shim binary, of which a waiting
// holder runs a few functions). Those stay in the page cache, shared with
// the shim; the holder faults back in the little it uses.
func trim() {
	debug.FreeOSMemory()
	self, err := os.Readlink("/proc/self/exe")
	if err != nil {
		return
	}
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		return
	}
	defer f.Close()
	type span struct{ start, end uintptr }
	var spans []span
	keep := false // the current mapping is one to drop
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) == 0 {
			continue
		}
		if lo, hi, ok := strings.Cut(fields[0], "-"); ok && !strings.HasSuffix(fields[0], ":") {
			keep = false
			// "start-end perms offset dev inode path": the binary's read-only
			// mappings (code, constants).
			if len(fields) < 6 || fields[5] != self || strings.Contains(fields[1], "w") {
				continue
			}
			start, err1 := strconv.ParseUint(lo, 16, 64)
			end, err2 := strconv.ParseUint(hi, 16, 64)
			if err1 == nil && err2 == nil && end > start {
				spans = append(spans, span{uintptr(start), uintptr(end)})
				keep = true
			}
			continue
		}
		// A read-only mapping with private (anonymous) copies, as relocations
		// make in a position-independent build, must keep them.
		if keep && fields[0] == "Anonymous:" && len(fields) >= 2 && fields[1] != "0" {
			spans = spans[:len(spans)-1]
			keep = false
		}
	}
	for _, s := range spans {
		for _, advice := range []int{unix.MADV_NOHUGEPAGE, unix.MADV_RANDOM, unix.MADV_DONTNEED} {
			_, _, _ = unix.Syscall(unix.SYS_MADVISE, s.start, s.end-s.start, uintptr(advice))
		}
	}
}
