package launch

import (
	"slices"
	"testing"
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
