package sandbox

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/example/containerd-shim-example-v2/holder"
	sandboxapi "github.com/example/containerd-shim-example-v2/proto/sandbox/v1"
)

// podNetPod is a PodSandboxConfig with a network of the pod's own (every
// namespace mode left at POD) and sysctls.
func podNetPod(hostname string, sysctls map[string]string) *sandboxapi.Any {
	return podSandboxConfig(hostname, sysctls, false)
}

// newNetNS is a new network namespace, as CNI's pin of it would be: a path
// to it that lasts until the test ends (a thread of its own holds it). The
// thread is never the main one, whose namespace is the process's own
// (/proc/self/ns/net).
func newNetNS(t *testing.T) string {
	t.Helper()
	type made struct {
		path string
		err  error
	}
	ready := make(chan made, 1)
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	for {
		go func() {
			runtime.LockOSThread() // never unlocked: the thread ends with its namespace
			if unix.Gettid() == os.Getpid() {
				ready <- made{} // held until the test ends, so the next try gets another thread
				<-release
				return
			}
			if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
				ready <- made{err: err}
				return
			}
			ready <- made{path: fmt.Sprintf("/proc/%d/task/%d/ns/net", os.Getpid(), unix.Gettid())}
			<-release
		}()
		m := <-ready
		if m.err != nil {
			t.Fatal(m.err)
		}
		if m.path != "" {
			return m.path
		}
	}
}

// sysctlIn reads a sysctl in the network namespace of process pid, its
// value's fields joined by one space.
func sysctlIn(t *testing.T, pid int, name string) string {
	t.Helper()
	type read struct {
		value string
		err   error
	}
	got := make(chan read, 1)
	go func() {
		// The thread goes back to its own namespace before it is unlocked.
		// It must not end in the pod's: ended locked, the process's main
		// thread is parked for good, not retired, and /proc/<pid>/ns/net
		// (the main thread's) would name the pod's namespace from then on.
		runtime.LockOSThread()
		home, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			got <- read{err: err}
			return
		}
		defer home.Close()
		f, err := os.Open(fmt.Sprintf("/proc/%d/ns/net", pid))
		if err != nil {
			got <- read{err: err}
			return
		}
		defer f.Close()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			got <- read{err: err}
			return
		}
		data, err := os.ReadFile(holder.SysctlPath(name))
		if rerr := unix.Setns(int(home.Fd()), unix.CLONE_NEWNET); rerr != nil {
			// Left locked: a thread other than the main one ends with it.
			got <- read{err: fmt.Errorf("back to the test's network namespace: %w", rerr)}
			return
		}
		runtime.UnlockOSThread()
		got <- read{strings.Join(strings.Fields(string(data)), " "), err}
	}()
	r := <-got
	if r.err != nil {
		t.Fatalf("sysctl %s in the network namespace of %d: %v", name, pid, r.err)
	}
	return r.value
}

// A pod with a network of its own gets the sysctls containerd's CRI gives a
// pause container's pod by default, unless the pod sets them itself.
func TestPodGetsCRIsDefaultSysctls(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("starting a holder needs root")
	}
	s, _ := newService(t)
	ctx := context.Background()
	for _, c := range []struct {
		id      string
		sysctls map[string]string
		port    string
	}{
		{"defaults", nil, "0"},
		{"own-port-start", map[string]string{unprivilegedPortStart: "80"}, "80"},
	} {
		if _, err := s.CreateSandbox(ctx, &sandboxapi.CreateSandboxRequest{SandboxId: c.id, BundlePath: t.TempDir(),
			NetnsPath: newNetNS(t), Options: podNetPod(c.id, c.sysctls)}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.ShutdownSandbox(ctx, &sandboxapi.ShutdownSandboxRequest{SandboxId: c.id}) })
		start, err := s.StartSandbox(ctx, &sandboxapi.StartSandboxRequest{SandboxId: c.id})
		if err != nil {
			t.Fatal(err)
		}
		if got := sysctlIn(t, int(start.Pid), unprivilegedPortStart); got != c.port {
			t.Errorf("%s: %s = %s, want %s", c.id, unprivilegedPortStart, got, c.port)
		}
		want := "0 2147483647"
		if inUserNS() {
			want = "1 0" // the kernel's: containerd leaves it alone in a user namespace
		}
		if got := sysctlIn(t, int(start.Pid), pingGroupRange); got != want {
			t.Errorf("%s: %s = %q, want %q", c.id, pingGroupRange, got, want)
		}
	}
}

// The defaults go only to a network of the pod's own that is not the shim's:
// a host-network pod, or a direct caller that named the node's namespace as
// the pod's, keeps the sysctls it asked for and no others.
func TestNoDefaultSysctlsOutsideThePodsNetwork(t *testing.T) {
	asked := map[string]string{"kernel.shm_rmid_forced": "1"}
	for _, c := range []struct {
		what  string
		cfg   PodConfig
		netns string
	}{
		{"host network", PodConfig{Network: ModeNode, Sysctls: asked}, ""},
		{"the shim's own namespace", PodConfig{Network: ModePod, Sysctls: asked}, "/proc/self/ns/net"},
		{"the shim's own namespace, no sysctls", PodConfig{Network: ModePod}, fmt.Sprintf("/proc/%d/ns/net", os.Getpid())},
	} {
		if got := podSysctls(c.cfg, c.netns); fmt.Sprint(got) != fmt.Sprint(c.cfg.Sysctls) {
			t.Errorf("%s: sysctls %v, want %v", c.what, got, c.cfg.Sysctls)
		}
	}
}

// A pod that sets a default's sysctl under sysctl.d(5)'s slash name (kubelet
// passes it on as written) gets no default beside it: the holder would write
// the two names of one sysctl in some order, and the default could win.
func TestNoDefaultSysctlBesideThePodsOwnUnderItsOtherName(t *testing.T) {
	asked := map[string]string{"net/ipv4/ip_unprivileged_port_start": "81", "net/ipv4/ping_group_range": "1 1"}
	got := podSysctls(PodConfig{Network: ModePod, Sysctls: asked}, newNetNS(t))
	if fmt.Sprint(got) != fmt.Sprint(asked) {
		t.Errorf("sysctls %v, want only the pod's %v", got, asked)
	}
}
