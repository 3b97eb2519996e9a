// Package selftrim gives back the memory a long-lived, mostly idle process
// of this binary (the shim daemon, a pod holder) does not need resident: free
// heap, and the pages of its own executable it has stopped using.
package selftrim

import (
	"bufio"
	"io"
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
	anon, own := trimTargets()
	noHuge(anon)
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

// region is one mapping of the process, from a header line of
// /proc/self/maps or smaps: "start-end perms offset dev inode [path]".
type region struct {
	mapping
	writable bool
	// anon: no file behind it (the BSS, the heap, the runtime's own
	// mmaps, stacks), as opposed to files and [vdso], [vvar] and the like.
	anon bool
	path string
}

// parseRegion reads a mapping's header line; false for any other line (an
// smaps field such as "Anonymous: 0 kB").
func parseRegion(line string) (region, bool) {
	fields := strings.Fields(line)
	if len(fields) < 5 || strings.HasSuffix(fields[0], ":") {
		return region{}, false
	}
	start, end, ok := parseRange(fields[0])
	if !ok || end <= start {
		return region{}, false
	}
	r := region{mapping: mapping{start, end}, writable: strings.Contains(fields[1], "w")}
	if len(fields) > 5 {
		r.path = fields[5]
	}
	r.anon = fields[4] == "0" && (r.path == "" || r.path == "[heap]" || r.path == "[stack]")
	return r, true
}

// kept holds, for a process that leaves /proc behind (KeepProc), its
// /proc/self files open and its executable's path.
var kept struct {
	files map[string]*os.File // by /proc/self path
	exe   string
}

// KeepProc keeps the /proc/self files Trim and NoHugePages read (maps and
// smaps) open, and notes the executable's path, so that they still work
// after the process chroots into a directory without /proc (a pod holder).
// It keeps the files, never a directory: an open directory in /proc would
// lead whoever reaches the process's descriptors (/proc/<pid>/fd/N/..) up to
// the filesystem's real root. A file that cannot be opened now is not read
// later.
func KeepProc() {
	kept.files = map[string]*os.File{}
	for _, name := range []string{"/proc/self/maps", "/proc/self/smaps"} {
		if f, err := os.Open(name); err == nil {
			kept.files[name] = f
		}
	}
	if exe, err := os.Executable(); err == nil {
		kept.exe = exe
	}
}

// executable is the running executable's path ("" if unknown).
func executable() string {
	if kept.files != nil {
		return kept.exe
	}
	self, err := os.Executable()
	if err != nil {
		return ""
	}
	return self
}

// openProc opens a /proc/self file, or rewinds KeepProc's; done releases it.
func openProc(file string) (f *os.File, done func(), err error) {
	if kept.files != nil {
		f := kept.files[file]
		if f == nil {
			return nil, nil, os.ErrNotExist
		}
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			return nil, nil, err
		}
		return f, func() {}, nil
	}
	if f, err = os.Open(file); err != nil {
		return nil, nil, err
	}
	return f, func() { f.Close() }, nil
}

// eachLine calls fn for each line of a /proc file of this process.
func eachLine(file string, fn func(line string)) {
	f, done, err := openProc(file)
	if err != nil {
		return
	}
	defer done()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fn(sc.Text())
	}
}

// trimTargets reads /proc/self/smaps once for what Trim acts on: the
// anonymous mappings, and the non-writable mappings of the executable that
// hold no anonymous (copied-on-write) pages.
func trimTargets() (anon, own []mapping) {
	self := executable()
	var cur *region
	eachLine("/proc/self/smaps", func(line string) {
		if r, ok := parseRegion(line); ok {
			cur = nil
			if r.anon {
				anon = append(anon, r.mapping)
			}
			if self != "" && r.path == self && !r.writable {
				own = append(own, r.mapping)
				cur = &r
			}
			return
		}
		if v, ok := strings.CutPrefix(line, "Anonymous:"); ok && cur != nil {
			if f := strings.Fields(v); len(f) > 0 && f[0] != "0" {
				own = own[:len(own)-1] // has private copies: keep it as it is
			}
			cur = nil
		}
	})
	return anon, own
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
