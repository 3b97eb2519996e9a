package selftrim

import (
	"bufio"
	"os"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

// bssMarker is zero-initialised: the linker puts it in the executable's BSS,
// which the kernel maps as one anonymous region after the data segment.
var bssMarker byte

// NoHugeBSS keeps the executable's BSS in small pages. Go reserves tens of
// MiB of it (runtime tables) and touches a few pages; on a node whose
// transparent huge pages are "always" (RHEL's default) one touched page in an
// aligned 2 MiB stretch makes the kernel back all 2 MiB, fault-time or later
// through khugepaged: 2 MiB of anonymous memory per shim for nothing (seen in
// the cgroup v2 lane's Debian kernel). Call it early; a parent that sets
// PR_SET_THP_DISABLE before executing the binary keeps its start-up faults
// small too (see DisableTHPForExec), and then this clears that flag so that
// the process's children (the OCI runtime, containers) do not inherit it.
func NoHugeBSS() {
	if start, end, ok := mappingOf(uintptr(unsafe.Pointer(&bssMarker))); ok {
		madvise(start, end-start, unix.MADV_NOHUGEPAGE)
	}
	EnableTHP()
}

// DisableTHPForExec sets PR_SET_THP_DISABLE on the calling process, which a
// child or an execve'd image inherits: its runtime's start-up then faults in
// small pages until its NoHugeBSS. Undo it with EnableTHP if the process
// itself goes on.
func DisableTHPForExec() { _ = unix.Prctl(unix.PR_SET_THP_DISABLE, 1, 0, 0, 0) }

// EnableTHP clears PR_SET_THP_DISABLE.
func EnableTHP() { _ = unix.Prctl(unix.PR_SET_THP_DISABLE, 0, 0, 0, 0) }

// mappingOf finds the mapping that holds addr, from /proc/self/maps.
func mappingOf(addr uintptr) (start, end uintptr, ok bool) {
	f, err := os.Open("/proc/self/maps")
	if err != nil {
		return 0, 0, false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		rng, _, _ := strings.Cut(sc.Text(), " ")
		if s, e, ok := parseRange(rng); ok && s <= addr && addr < e {
			return s, e, true
		}
	}
	return 0, 0, false
}
