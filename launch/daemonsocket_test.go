package launch

import "testing"

// --all finds daemons by their command line: `start` gives them -socket and no action;
// every other invocation of the binary (start itself, delete, a pod's holder) is not one.
func TestDaemonSocket(t *testing.T) {
	for _, c := range []struct {
		args       []string
		want       string
		containerd string
	}{
		{[]string{"-namespace", "k8s.io", "-id", "c1", "-address", "/run/containerd/containerd.sock", "-socket", "/run/containerd/s/abc"}, "/run/containerd/s/abc", "/run/containerd/containerd.sock"},
		{[]string{"--socket=/run/s/x", "-namespace", "ns"}, "/run/s/x", ""},
		{[]string{"-namespace", "ns", "-debug", "-socket", "/s", "--address=/b"}, "/s", "/b"},
		{[]string{"-namespace", "ns", "-address", "/a", "start"}, "", ""},
		{[]string{"-namespace", "ns", "-id", "c1", "delete"}, "", ""},
		{[]string{"holder", "-socket", "/s"}, "", ""},
		{nil, "", ""},
	} {
		if got, containerd := DaemonSocket(c.args); got != c.want || containerd != c.containerd {
			t.Errorf("DaemonSocket(%q) = %q, %q; want %q, %q", c.args, got, containerd, c.want, c.containerd)
		}
	}
}
