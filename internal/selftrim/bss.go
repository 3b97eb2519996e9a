package selftrim

import "golang.org/x/sys/unix"

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

// noHugeAnon sets MADV_NOHUGEPAGE on every anonymous mapping of the process,
// from /proc/self/maps.
func noHugeAnon() {
	var anon []mapping
	eachLine("/proc/self/maps", func(line string) {
		if r, ok := parseRegion(line); ok && r.anon {
			anon = append(anon, r.mapping)
		}
	})
	noHuge(anon)
}

func noHuge(anon []mapping) {
	for _, m := range anon {
		madvise(m.start, m.end-m.start, unix.MADV_NOHUGEPAGE)
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
	eachLine("/proc/self/maps", func(line string) {
		if r, isRegion := parseRegion(line); isRegion && !ok && r.start <= addr && addr < r.end {
			start, end, ok = r.start, r.end, true
		}
	})
	return start, end, ok
}
