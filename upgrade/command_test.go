package upgrade

import (
	"fmt"
	"os"
	"os/exec"
	"slices"
	"testing"
	"time"
)

// --all finds the live daemons of the binary's name by their command lines;
// -containerd-address keeps those of one containerd (a node may run two,
// and a test run beside another must not upgrade the other's shims).
func TestLiveDaemonsOfOneContainerd(t *testing.T) {
	name := fmt.Sprintf("upgrade-test-daemon-%d", os.Getpid())
	for _, args := range [][]string{
		{"-socket", "/s1", "-address", "/c1"},
		{"-socket", "/s2", "-address", "unix:///c2"},
		{"-socket", "/s3", "-address", "/c2"},
	} {
		// sh under another argv[0], the flags as its positional
		// parameters; `; :` keeps it from replacing itself with sleep.
		cmd := &exec.Cmd{Path: "/bin/sh", Args: append([]string{name, "-c", "sleep 100; :", "sh"}, args...)}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	}
	// The daemons' flags as the shim's own parser would read them.
	flags := func(args []string) (socket, containerd string) {
		for i := 0; i+1 < len(args); i++ {
			switch args[i] {
			case "-socket":
				socket = args[i+1]
			case "-address":
				containerd = args[i+1]
			}
		}
		return socket, containerd
	}
	for _, c := range []struct {
		containerd string
		want       []string
	}{
		{"", []string{"/s1", "/s2", "/s3"}},
		{"/c2", []string{"/s2", "/s3"}},
		{"unix:///c1", []string{"/s1"}},
		{"/c3", nil},
	} {
		var got []string
		for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
			var err error
			if got, err = liveDaemons(name, c.containerd, flags); err != nil {
				t.Fatal(err)
			}
			slices.Sort(got)
			if slices.Equal(got, c.want) || time.Now().After(deadline) {
				break
			}
		}
		if !slices.Equal(got, c.want) {
			t.Errorf("daemons of containerd %q: %q, want %q", c.containerd, got, c.want)
		}
	}
}
