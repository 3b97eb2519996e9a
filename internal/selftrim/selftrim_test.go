package selftrim

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ownTextRss returns the resident kB of this process's executable mappings
// that are not writable (code and read-only data).
func ownTextRss(t *testing.T) int {
	t.Helper()
	self, _ := os.Executable()
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	total, inSelf := 0, false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) >= 5 && strings.Contains(fields[0], "-") && !strings.HasSuffix(fields[0], ":") {
			inSelf = len(fields) >= 6 && fields[5] == self && !strings.Contains(fields[1], "w")
			continue
		}
		if inSelf && len(fields) >= 2 && fields[0] == "Rss:" {
			n, _ := strconv.Atoi(fields[1])
			total += n
		}
	}
	return total
}

func TestTrimMemoryDropsExecutablePages(t *testing.T) {
	before := ownTextRss(t)
	Trim()
	after := ownTextRss(t)
	t.Logf("executable resident: %d kB -> %d kB", before, after)
	// Reading smaps and logging fault some pages back in, and a repeated
	// run (-count) starts already trimmed: only a drop is certain.
	if before == 0 || after >= before {
		t.Fatalf("trim kept %d of %d kB resident", after, before)
	}
}

// NoHugePages marks every anonymous mapping (the binary's BSS among them) as
// never to be backed by huge pages, and leaves no PR_SET_THP_DISABLE for
// children.
func TestNoHugePages(t *testing.T) {
	// The heap must not grow between the call and the read of smaps: the
	// runtime commits a reserved stretch by mapping it anew (MAP_FIXED), a
	// new mapping without the flag until the next call, as NoHugePages
	// says. So smaps is read into a buffer allocated before the call; and
	// only the anonymous mappings listed just before it are checked (by
	// start: a mapping may grow), against what another goroutine maps.
	bss, _, ok := mappingOf(uintptr(unsafe.Pointer(&bssMarker)))
	if !ok {
		t.Fatal("no mapping holds the BSS marker")
	}
	buf := make([]byte, 8<<20)
	fd, err := unix.Open("/proc/self/smaps", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	before := map[string]bool{}
	eachLine("/proc/self/maps", func(line string) {
		if r, ok := parseRegion(line); ok && r.anon {
			before[fmt.Sprintf("%08x", r.start)] = true
		}
	})
	DisableTHPForExec()
	NoHugePages()
	n := 0
	for n < len(buf) {
		m, err := unix.Read(fd, buf[n:])
		if err != nil {
			t.Fatal(err)
		}
		if m == 0 {
			break
		}
		n += m
	}
	if v, err := unix.PrctlRetInt(unix.PR_GET_THP_DISABLE, 0, 0, 0, 0); err != nil || v != 0 {
		t.Fatalf("PR_GET_THP_DISABLE = %d, %v after NoHugePages, want 0", v, err)
	}
	raw := buf[:n]
	var header string
	anon, sawBSS := 0, false
	for _, line := range strings.Split(string(raw), "\n") {
		fields := strings.Fields(line)
		if len(fields) >= 5 && strings.Contains(fields[0], "-") && !strings.HasSuffix(fields[0], ":") {
			header = ""
			if fields[4] == "0" && (len(fields) == 5 || fields[5] == "[heap]" || fields[5] == "[stack]") && before[strings.SplitN(fields[0], "-", 2)[0]] {
				header = line
				anon++
				sawBSS = sawBSS || strings.HasPrefix(line, fmt.Sprintf("%08x-", bss))
			}
			continue
		}
		if header != "" && strings.HasPrefix(line, "VmFlags:") && !strings.Contains(line, " nh") {
			t.Errorf("anonymous mapping %q: flags %q, want nh (no huge pages)", header, line)
		}
	}
	if anon < 3 || !sawBSS {
		t.Fatalf("%d anonymous mappings checked, BSS among them %v: the parse missed them", anon, sawBSS)
	}
}

// One smaps pass finds both what Trim acts on: anonymous mappings (the BSS
// among them) and the executable's read-only mappings, none writable.
func TestTrimTargets(t *testing.T) {
	anon, own := trimTargets()
	bss, _, ok := mappingOf(uintptr(unsafe.Pointer(&bssMarker)))
	if !ok {
		t.Fatal("no mapping holds the BSS marker")
	}
	found := false
	for _, m := range anon {
		found = found || m.start == bss
	}
	if !found {
		t.Errorf("the BSS mapping %x is not among the %d anonymous mappings", bss, len(anon))
	}
	if len(own) == 0 {
		t.Fatal("no read-only mapping of the executable found")
	}
	for _, m := range own {
		for _, a := range anon {
			if m == a {
				t.Errorf("mapping %x counted as both the executable's and anonymous", m.start)
			}
		}
	}
}
