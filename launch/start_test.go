package launch

import (
	"slices"
	"testing"

	"golang.org/x/sys/unix"
)

func TestDaemonEnvKeepsHeapOffHugePages(t *testing.T) {
	for _, c := range []struct{ in, want []string }{
		{[]string{"PATH=/bin"}, []string{"PATH=/bin", "GODEBUG=disablethp=1"}},
		{[]string{"GODEBUG=madvdontneed=1", "A=b"}, []string{"A=b", "GODEBUG=madvdontneed=1,disablethp=1"}},
		{[]string{"GODEBUG="}, []string{"GODEBUG=disablethp=1"}},
	} {
		if got := daemonEnv(c.in); !slices.Equal(got, c.want) {
			t.Errorf("daemonEnv(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

// What start inherited without close-on-exec is marked before the daemon is
// spawned, so it does not pass on to the daemon and its children.
func TestKeepInheritedOut(t *testing.T) {
	var p [2]int
	if err := unix.Pipe2(p[:], 0); err != nil { // no O_CLOEXEC: as from a careless parent
		t.Fatal(err)
	}
	defer unix.Close(p[0])
	defer unix.Close(p[1])
	keepInheritedOut()
	for _, fd := range p {
		flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
		if err != nil || flags&unix.FD_CLOEXEC == 0 {
			t.Errorf("fd %d: flags %#x (%v), want close-on-exec", fd, flags, err)
		}
	}
}
