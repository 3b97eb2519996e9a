package launch

import (
	"bufio"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
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
	trimMemory()
	after := ownTextRss(t)
	t.Logf("executable resident: %d kB -> %d kB", before, after)
	// Reading smaps and logging fault some pages back in, and a repeated
	// run (-count) starts already trimmed: only a drop is certain.
	if before == 0 || after >= before {
		t.Fatalf("trim kept %d of %d kB resident", after, before)
	}
}

// runTrimmer runs a trimmer whose trims are counted on the returned channel.
func runTrimmer(t *testing.T, quiet, interval time.Duration) (*trimmer, <-chan struct{}) {
	t.Helper()
	trims := make(chan struct{}, 100)
	tr := newTrimmer()
	tr.trim = func() { trims <- struct{}{} }
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() { tr.Run(stop, quiet, interval); close(done) }()
	t.Cleanup(func() { close(stop); <-done })
	return tr, trims
}

// A burst of requests is followed by a trim once the daemon is quiet, long
// before the periodic interval.
func TestTrimFollowsAQuietSpell(t *testing.T) {
	tr, trims := runTrimmer(t, 20*time.Millisecond, time.Hour)
	<-trims // the settling trim after start
	for range 5 {
		tr.Touch()
	}
	select {
	case <-trims:
	case <-time.After(10 * time.Second):
		t.Fatal("no trim after the requests stopped")
	}
	select {
	case <-trims:
		t.Fatal("a second trim without new requests")
	case <-time.After(100 * time.Millisecond):
	}
}

// Requests arriving more often than the quiet period do not postpone the
// trim past the interval.
func TestTrimNotPostponedForeverByRequests(t *testing.T) {
	tr, trims := runTrimmer(t, time.Hour, 50*time.Millisecond)
	deadline := time.After(10 * time.Second)
	for n := 0; n < 2; {
		select {
		case <-trims:
			n++
		case <-deadline:
			t.Fatalf("%d trims while requests kept coming, want 2", n)
		case <-time.After(5 * time.Millisecond):
			tr.Touch()
		}
	}
}
