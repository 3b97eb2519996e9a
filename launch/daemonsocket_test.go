package launch

import "testing"

// --all finds daemons by their command line: `start` gives them -socket and no action;
// every other invocation of the binary (start itself, delete, a pod's holder) is not one.
func TestDaemonSocket(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"-namespace", "k8s.io", "-id", "c1", "-address", "/run/containerd/containerd.sock", "-socket", "/run/containerd/s/abc"}, "/run/containerd/s/abc"},
		{[]string{"--socket=/run/s/x", "-namespace", "ns"}, "/run/s/x"},
		{[]string{"-namespace", "ns", "-debug", "-socket", "/s"}, "/s"},
		{[]string{"-namespace", "ns", "-address", "/a", "start"}, ""},
		{[]string{"-namespace", "ns", "-id", "c1", "delete"}, ""},
		{[]string{"holder", "-socket", "/s"}, ""},
		{nil, ""},
	} {
		if got := DaemonSocket(c.args); got != c.want {
			t.Errorf("DaemonSocket(%q) = %q, want %q", c.args, got, c.want)
		}
	}
}
