package selftrim

import (
	"bufio"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// bssMarker is zero-initialised: the linker puts it in the executable's BSS,
// which the kernel maps as one anonymous region after the data segment.
var bssMarker byte

// NoHugePages keeps the process's anonymous memory in small pages, and
// clears PR_SET_THP_DISABLE (see below).
//
// Why: on a node whose transparent huge pages are "always" (RHEL's default,
// and the cgroup v2 lane's Debian kernel), one touched page in an aligned
// 2 MiB stretch of an eligible mapping makes the kernel back all 2 MiB, at
// the fault or later through khugepaged. A shim touches a few pages here and
// there of large mappings: the BSS (Go reserves tens of MiB of runtime
// tables there), the heap arena's reservation, and the regions where the
// runtime keeps its own metadata. One huge page there was 2 MiB of anonymous
// memory per shim for nothing (seen for the BSS, and for the runtime's
// metadata: a shim of 3.2 MiB instead of 1.4). MADV_NOHUGEPAGE on every
// anonymous mapping stops both ways, for the mappings and for what the
// runtime later maps inside its reservations (a VMA split keeps the flag).
// Mappings made after the call are covered at the next call: Trim calls
// it again.
//
// Call it early: a parent that sets PR_SET_THP_DISABLE before executing the
// binary keeps the runtime's start-up faults small too (DisableTHPForExec),
// and this clears that flag so that the process's children (the OCI
// runtime, containers) do not inherit it.
func NoHugePages() {
	noHugeAnon()
	EnableTHP()
}

// noHugeAnon sets MADV_NOHUGEPAGE on every anonymous mapping of the process
// (no file behind it: the BSS, the heap, the runtime's own mmaps, stacks).
func noHugeAnon() {
	f, err := os.Open("/proc/self/maps")
	if err != nil {
		return
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// "start-end perms offset dev inode [path]"
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 || fields[4] != "0" {
			continue // backed by a file
		}
		if len(fields) > 5 && fields[5] != "[heap]" && fields[5] != "[stack]" {
			continue // [vdso], [vvar] and the like
		}
		if start, end, ok := parseRange(fields[0]); ok && end > start {
			madvise(start, end-start, unix.MADV_NOHUGEPAGE)
		}
	}
}

// DisableTHPForExec sets PR_SET_THP_DISABLE on the calling process, which a
// child or an execve'd image inherits: its runtime's start-up then faults in
// small pages until its NoHugePages. Undo it with EnableTHP if the process
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
