package holder

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/example/containerd-shim-example-v2/cgroup"
	"github.com/example/containerd-shim-example-v2/reaper"
)

// The test binary doubles as the holder: Start re-executes /proc/self/exe
// with Action, as the shim does.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == Action {
		if err := Main(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("starting a namespace holder needs root")
	}
}

func startReaper(t *testing.T) *reaper.Reaper {
	t.Helper()
	r := reaper.New()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	// Stopped before the next test: wait4 takes any child of the process.
	t.Cleanup(func() { cancel(); <-done })
	go func() { defer close(done); r.Run(ctx) }()
	return r
}

func nsLink(t *testing.T, pid int, ns string) string {
	t.Helper()
	l, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/%s", pid, ns))
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func stopAndWait(t *testing.T, h *Holder) {
	t.Helper()
	h.Stop()
	select {
	case <-h.Exit():
	case <-time.After(5 * time.Second):
		t.Fatalf("holder %d did not exit after Stop", h.Pid)
	}
}

// bothHolders runs a test with the tiny holder (where there is one) and the
// Go holder.
func bothHolders(t *testing.T, test func(t *testing.T)) {
	for _, goOnly := range []bool{false, true} {
		name := "tiny"
		if goOnly {
			name = "go"
		} else if tinyHolder() == nil {
			continue
		}
		t.Run(name, func(t *testing.T) {
			goHolderOnly = goOnly
			defer func() { goHolderOnly = false }()
			test(t)
		})
	}
}

func TestHolderNamespacesHostnameSysctl(t *testing.T) { bothHolders(t, testHolderNamespaces) }

func testHolderNamespaces(t *testing.T) {
	needRoot(t)
	r := startReaper(t)
	h, err := Start(Config{
		ID: "t1", NewIPC: true, NewUTS: true, NewPID: true, Reaper: r,
		Hostname: "pod-host", Sysctls: map[string]string{"kernel.shm_rmid_forced": "1"},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer stopAndWait(t, h)
	self := homeThread(t)
	for _, ns := range []string{"ipc", "uts", "pid"} {
		if nsLink(t, h.Pid, ns) == nsLink(t, self, ns) {
			t.Errorf("holder shares the %s namespace with its parent", ns)
		}
	}
	if nsLink(t, h.Pid, "net") != nsLink(t, self, "net") {
		t.Errorf("holder without NetNS is not in its parent's network namespace")
	}
	// Read the holder's hostname and sysctl from inside its namespaces.
	if got := readIn(t, h.Pid, "uts", "/proc/sys/kernel/hostname"); got != "pod-host" {
		t.Errorf("hostname in the holder's UTS namespace: %q, want pod-host", got)
	}
	if got := readIn(t, h.Pid, "ipc", "/proc/sys/kernel/shm_rmid_forced"); got != "1" {
		t.Errorf("kernel.shm_rmid_forced in the holder's IPC namespace: %q, want 1", got)
	}
	if got := readIn(t, self, "ipc", "/proc/sys/kernel/shm_rmid_forced"); got == "1" {
		t.Logf("note: the host's kernel.shm_rmid_forced is 1 too: the check above proves less")
	}
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", h.Pid))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(st), "NSpid:\t") || !strings.HasSuffix(strings.Fields(grepLine(string(st), "NSpid:"))[2], "1") {
		t.Errorf("holder is not PID 1 of its PID namespace: %s", grepLine(string(st), "NSpid:"))
	}
	t.Logf("holder %d: %s, %s", h.Pid, grepLine(string(st), "VmRSS:"), grepLine(string(st), "RssAnon:"))
}

func TestHolderSetupFailureLeavesNothing(t *testing.T) {
	needRoot(t)
	r := startReaper(t)
	_, err := Start(Config{ID: "t2", NewUTS: true, Reaper: r,
		Sysctls: map[string]string{"net.no.such.sysctl": "1"}})
	if err == nil || !strings.Contains(err.Error(), "net.no.such.sysctl") {
		t.Fatalf("Start with a sysctl that does not exist: %v, want its error", err)
	}
	if hs := holdersNamed("t2"); len(hs) > 0 {
		t.Errorf("holder processes left after a failed start: %v", hs)
	}
}

func TestHolderMissingNetNS(t *testing.T) {
	needRoot(t)
	r := startReaper(t)
	_, err := Start(Config{ID: "t3", NetNS: "/run/netns/does-not-exist", Reaper: r})
	if err == nil || !strings.Contains(err.Error(), "not found") {
		t.Fatalf("Start in a missing netns: %v, want not found", err)
	}
}

func TestCheckSysctl(t *testing.T) {
	for _, c := range []struct {
		name          string
		net, ipc, uts bool
		ok            bool
	}{
		{"net.ipv4.ip_unprivileged_port_start", true, false, false, true},
		{"net.ipv4.ip_unprivileged_port_start", false, true, true, false},
		{"kernel.shm_rmid_forced", false, true, false, true},
		{"kernel.shm_rmid_forced", true, false, true, false},
		{"fs.mqueue.msg_max", false, true, false, true},
		{"kernel.domainname", false, false, true, true},
		{"kernel.hostname", true, true, true, false},
		{"kernel/hostname", true, true, true, false},
		{"kernel.pid_max", true, true, true, false},
		{"vm.swappiness", true, true, true, false},
		{"net/../kernel", true, true, true, false},
		{"", true, true, true, false},
		// sysctl.d(5)'s two forms, as runc takes them: a VLAN interface's
		// name keeps its dot.
		{"net.ipv4.conf.eth0/100.forwarding", true, false, false, true},
		{"net/ipv4/conf/eth0.100/forwarding", true, false, false, true},
		{"kernel/shm_rmid_forced", false, true, false, true},
		{"kernel/shm_rmid_forced", true, false, true, false},
		{"net.ipv4.conf.//.forwarding", true, true, true, false},
		{"net/ipv4/../../kernel/pid_max", true, true, true, false},
		{"net.ipv4.", true, true, true, false},
		{"net//ipv4", true, true, true, false},
	} {
		err := CheckSysctl(c.name, c.net, c.ipc, c.uts)
		if (err == nil) != c.ok {
			t.Errorf("CheckSysctl(%q, net=%v ipc=%v uts=%v) = %v, want ok=%v", c.name, c.net, c.ipc, c.uts, err, c.ok)
		}
	}
}

func TestSysctlPath(t *testing.T) {
	for name, want := range map[string]string{
		"net.ipv4.ip_forward":               "/proc/sys/net/ipv4/ip_forward",
		"net.ipv4.conf.eth0/100.forwarding": "/proc/sys/net/ipv4/conf/eth0.100/forwarding",
		"net/ipv4/conf/eth0.100/forwarding": "/proc/sys/net/ipv4/conf/eth0.100/forwarding",
		"kernel/shm_rmid_forced":            "/proc/sys/kernel/shm_rmid_forced",
	} {
		if got := SysctlPath(name); got != want {
			t.Errorf("SysctlPath(%q) = %q, want %q", name, got, want)
		}
	}
}

func TestExpandSlice(t *testing.T) {
	for in, want := range map[string]string{
		"kubepods-besteffort-pod12.slice": "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod12.slice",
		"/kubepods/besteffort/pod12":      "/kubepods/besteffort/pod12",
		"machine.slice":                   "/machine.slice",
		"-.slice":                         "/",
	} {
		if got := expandSlice(in); got != want {
			t.Errorf("expandSlice(%q) = %q, want %q", in, got, want)
		}
	}
	if CgroupPath("", "x") != "" || CgroupPath("/p", "x") != "/p/x" || CgroupPath("-.slice", "x") != "/x" {
		t.Errorf("CgroupPath: %q %q %q", CgroupPath("", "x"), CgroupPath("/p", "x"), CgroupPath("-.slice", "x"))
	}
}

// A relative cgroup parent goes where runc puts the pod's containers for
// it: under v2 beside the runtime's own cgroup (the shim's), under v1 below
// it.
func TestCgroupPathOfARelativeParent(t *testing.T) {
	v2 := "0::/system.slice/containerd.service\n"
	v1 := "12:pids:/system.slice/containerd.service\n5:cpu,cpuacct:/system.slice/containerd.service\n4:memory:/system.slice/containerd.service\n0::/system.slice/containerd.service\n"
	base := func(procCgroup string, v2 bool) string {
		own, err := cgroup.Parse("/sys/fs/cgroup", []byte(procCgroup), v2)
		if err != nil {
			t.Fatal(err)
		}
		return runcRelativeBase(own, "/sys/fs/cgroup")
	}
	if got := base(v2, true); got != "/system.slice" {
		t.Errorf("v2 base %q, want /system.slice", got)
	}
	if got := base(v1, false); got != "/system.slice/containerd.service" {
		t.Errorf("v1 base %q, want the memory hierarchy's path", got)
	}
	defer func(f func() string) { relativeBase = f }(relativeBase)
	relativeBase = func() string { return "/system.slice" }
	if got := CgroupPath("pods/p1", "sb"); got != "/system.slice/pods/p1/sb" {
		t.Errorf("CgroupPath of a relative parent: %q", got)
	}
	if got := CgroupPath("/kubepods/p1", "sb"); got != "/kubepods/p1/sb" {
		t.Errorf("CgroupPath of an absolute parent: %q", got)
	}
}

// readIn reads a file from a thread that joined pid's namespace of kind ns
// (the thread is thrown away afterwards).
func readIn(t *testing.T, pid int, ns, path string) string {
	t.Helper()
	type res struct {
		s   string
		err error
	}
	ch := make(chan res, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with the goroutine
		f, err := os.Open(fmt.Sprintf("/proc/%d/ns/%s", pid, ns))
		if err != nil {
			ch <- res{err: err}
			return
		}
		defer f.Close()
		if err := unix.Setns(int(f.Fd()), 0); err != nil {
			ch <- res{err: err}
			return
		}
		data, err := os.ReadFile(path)
		ch <- res{strings.TrimSpace(string(data)), err}
	}()
	r := <-ch
	if r.err != nil {
		t.Fatalf("read %s in %s namespace of %d: %v", path, ns, pid, r.err)
	}
	return r.s
}

// holdersNamed lists processes whose command line is "<x> pod-holder <id>".
func holdersNamed(id string) []int {
	entries, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range entries {
		raw, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err != nil {
			continue
		}
		args := strings.Split(strings.TrimRight(string(raw), "\x00"), "\x00")
		if len(args) == 3 && args[1] == Action && args[2] == id {
			var pid int
			fmt.Sscan(e.Name(), &pid)
			out = append(out, pid)
		}
	}
	return out
}

func grepLine(s, prefix string) string {
	for _, l := range strings.Split(s, "\n") {
		if strings.HasPrefix(l, prefix) {
			return l
		}
	}
	return ""
}

// TestHolderJoinsNetNS: the holder is born in the network namespace it is
// given (here one a locked thread of the test made, named by its /proc path,
// so nothing is mounted).
func TestHolderJoinsNetNS(t *testing.T) { bothHolders(t, testHolderJoinsNetNS) }

func testHolderJoinsNetNS(t *testing.T) {
	needRoot(t)
	r := startReaper(t)
	type nsThread struct {
		path string
		err  error
	}
	ready := make(chan nsThread, 1)
	release := make(chan struct{})
	defer close(release)
	go func() {
		runtime.LockOSThread() // the thread leaves with its foreign netns
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			ready <- nsThread{err: err}
			return
		}
		ready <- nsThread{path: fmt.Sprintf("/proc/%d/task/%d/ns/net", os.Getpid(), unix.Gettid())}
		<-release
	}()
	ns := <-ready
	if ns.err != nil {
		t.Fatal(ns.err)
	}
	want, err := os.Readlink(ns.path)
	if err != nil {
		t.Fatal(err)
	}
	h, err := Start(Config{ID: "t4", NetNS: ns.path, NewIPC: true, NewUTS: true, Reaper: r,
		Sysctls: map[string]string{"net.ipv4.ip_unprivileged_port_start": "1000"}})
	if err != nil {
		t.Fatal(err)
	}
	defer stopAndWait(t, h)
	// The thread that forked the holder went home before Start returned:
	// the one thread that made the netns is the only one in it. (Counted
	// before readIn, whose throw-away threads join namespaces too.)
	entries, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Fatal(err)
	}
	var in []string
	for _, e := range entries {
		if l, err := os.Readlink("/proc/self/task/" + e.Name() + "/ns/net"); err == nil && l == want {
			in = append(in, e.Name())
		}
	}
	if len(in) != 1 {
		t.Errorf("threads %v of the test process are in the pod's netns, want only the one that made it", in)
	}
	if got := nsLink(t, h.Pid, "net"); got != want {
		t.Errorf("holder's netns %s, want %s", got, want)
	}
	if got := readIn(t, h.Pid, "net", "/proc/sys/net/ipv4/ip_unprivileged_port_start"); got != "1000" {
		t.Errorf("net sysctl in the holder's netns: %q, want 1000", got)
	}
	if got := readIn(t, homeThread(t), "net", "/proc/sys/net/ipv4/ip_unprivileged_port_start"); got == "1000" {
		t.Errorf("the net sysctl leaked into the test's own netns")
	}
}

// homeThread locks the test's goroutine to its thread for the rest of the
// test and returns the thread's id: a thread in the process's own
// namespaces. (/proc/<pid>/ns is the main thread's, and a test's
// throw-away locked goroutine, as in readIn, may have run there and left it
// parked in a foreign namespace for good.)
func homeThread(t *testing.T) int {
	t.Helper()
	runtime.LockOSThread()
	t.Cleanup(runtime.UnlockOSThread)
	return unix.Gettid()
}

// TestHolderReapsOrphans: as PID 1 of a pod's PID namespace, the holder
// leaves no zombie of a process orphaned inside it.
func TestHolderReapsOrphans(t *testing.T) { bothHolders(t, testHolderReapsOrphans) }

func testHolderReapsOrphans(t *testing.T) {
	needRoot(t)
	r := startReaper(t)
	h, err := Start(Config{ID: "t5", NewPID: true, Reaper: r})
	if err != nil {
		t.Fatal(err)
	}
	defer stopAndWait(t, h)
	// A shell started in the holder's PID namespace backgrounds a sleep and
	// exits: the sleep is orphaned and re-parented to the holder.
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // the thread's children join the pod's PID namespace
		f, err := os.Open(fmt.Sprintf("/proc/%d/ns/pid", h.Pid))
		if err != nil {
			done <- err
			return
		}
		defer f.Close()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWPID); err != nil {
			done <- err
			return
		}
		// The shell is the test's own child: the test's reaper owns its
		// exit (exec.Cmd.Wait would race with that reaper's wait4 and could
		// find the shell already reaped: "waitid: no child processes").
		exitc, err := r.Start(exec.Command("/bin/sh", "-c", "sleep 0.3 </dev/null >/dev/null 2>&1 & exit 0"))
		if err != nil {
			done <- err
			return
		}
		if e := <-exitc; e.Status != 0 {
			done <- fmt.Errorf("shell exited %d", e.Status)
			return
		}
		done <- nil
	}()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	var orphan int
	for end := time.Now().Add(2 * time.Second); time.Now().Before(end) && orphan == 0; time.Sleep(10 * time.Millisecond) {
		orphan = childOf(h.Pid)
	}
	if orphan == 0 {
		t.Fatalf("no orphan re-parented to holder %d", h.Pid)
	}
	time.Sleep(600 * time.Millisecond)
	if _, err := os.Stat(fmt.Sprintf("/proc/%d", orphan)); err == nil {
		st, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", orphan))
		t.Errorf("orphan %d of holder %d still in /proc after it exited: %s", orphan, h.Pid, st)
	}
}

// childOf returns a child of pid, or 0.
func childOf(pid int) int {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
	if err != nil {
		return 0
	}
	var child int
	fmt.Sscan(string(data), &child)
	return child
}

func TestHolderStopExitIsAlwaysSIGKILL(t *testing.T) { bothHolders(t, testHolderStopExit) }

// A stopped pod reports the exit of its holder; like a pause container that
// CRI stops, that is 137 every time, not 0 or 137 depending on whether the
// holder saw its life pipe close before the signal landed.
func testHolderStopExit(t *testing.T) {
	needRoot(t)
	r := startReaper(t)
	for i := 0; i < 30; i++ {
		h, err := Start(Config{ID: "stop" + strconv.Itoa(i), Reaper: r})
		if err != nil {
			t.Fatal(err)
		}
		h.Stop()
		select {
		case e := <-h.Exit():
			if e.Status != 128+int(unix.SIGKILL) {
				t.Fatalf("stop #%d: holder exit status %d, want %d", i+1, e.Status, 128+int(unix.SIGKILL))
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("holder %d did not exit after Stop", h.Pid)
		}
	}
}

// TestHolderHasNothingOfTheNode: the holder is what CRI's pause container
// is to the containers of a pod sharing its PID namespace, their PID 1, and
// one with CAP_SYS_PTRACE reaches its root, working directory and
// descriptors through /proc/1. Its root is an empty directory, it runs as
// 65535 with CAP_SYS_CHROOT alone, and the OOM killer spares it as it spares
// a pause container (-998).
func TestHolderHasNothingOfTheNode(t *testing.T) { bothHolders(t, testHolderHasNothingOfTheNode) }

func testHolderHasNothingOfTheNode(t *testing.T) {
	needRoot(t)
	r := startReaper(t)
	h, err := Start(Config{ID: "t6", NewPID: true, NewIPC: true, NewUTS: true, Reaper: r})
	if err != nil {
		t.Fatal(err)
	}
	defer stopAndWait(t, h)
	proc := fmt.Sprintf("/proc/%d/", h.Pid)
	for _, d := range []string{"root", "cwd"} {
		// A removed directory reads as empty, or as gone (getdents(2)
		// on a dead directory is ENOENT).
		ents, err := os.ReadDir(proc + d)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			t.Fatal(err)
		}
		if len(ents) != 0 {
			var names []string
			for _, e := range ents {
				names = append(names, e.Name())
			}
			t.Errorf("the holder's %s (%s) holds %v, want an empty directory", d, readlink(t, proc+d), names)
		}
		if f, err := os.Create(proc + d + "/x"); err == nil {
			f.Close()
			t.Errorf("a file could be created in the holder's %s", d)
		}
	}
	st, err := os.ReadFile(proc + "status")
	if err != nil {
		t.Fatal(err)
	}
	status := string(st)
	for _, want := range []string{
		"Uid:\t65535\t65535\t65535\t65535", "Gid:\t65535\t65535\t65535\t65535", "Groups:\t \n",
		"CapPrm:\t0000000000040000", "CapEff:\t0000000000040000", // CAP_SYS_CHROOT (18)
	} {
		if !strings.Contains(status, want) {
			t.Errorf("holder status lacks %q:\n%s", want, status)
		}
	}
	// No directory open either (its root's, one in /proc): through
	// /proc/1/fd/N/.. a container walks up to the node's /. Nor a cgroup
	// file (the Go runtime's cpu.cfs_quota_us): reopened for writing
	// through /proc/1/fd/N, it sets the pod's limits.
	if fds, err := os.ReadDir(proc + "fd"); err != nil {
		t.Fatal(err)
	} else {
		for _, fd := range fds {
			l := readlink(t, proc+"fd/"+fd.Name())
			if fi, err := os.Stat(proc + "fd/" + fd.Name()); err == nil && fi.IsDir() {
				t.Errorf("the holder keeps a directory open as fd %s (%s)", fd.Name(), l)
			}
			if strings.HasPrefix(l, "/sys/") {
				t.Errorf("the holder keeps %s open as fd %s", l, fd.Name())
			}
		}
	}
	if got, want := oomScoreAdj(t, h.Pid), wantOOMScoreAdj(t); got != want {
		t.Errorf("holder oom_score_adj %d, want %d (a pause container's)", got, want)
	}
}

// wantOOMScoreAdj is the pause container's oom_score_adj as this process
// may give it: -998 with CAP_SYS_RESOURCE, else no lower than its own.
func wantOOMScoreAdj(t *testing.T) int {
	t.Helper()
	st, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	eff, err := strconv.ParseUint(strings.TrimSpace(strings.TrimPrefix(grepLine(string(st), "CapEff:"), "CapEff:")), 16, 64)
	if err != nil {
		t.Fatal(err)
	}
	if eff&(1<<unix.CAP_SYS_RESOURCE) != 0 {
		return -998
	}
	own := oomScoreAdj(t, os.Getpid())
	t.Logf("no CAP_SYS_RESOURCE here: the holder's oom_score_adj can be no lower than the test's own %d", own)
	return max(-998, own)
}

func oomScoreAdj(t *testing.T, pid int) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/oom_score_adj", pid))
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// setOOMScoreAdj lowers a process's oom_score_adj to -998, or, where the
// shim may not go below its own (no CAP_SYS_RESOURCE, as in some test
// containers), to the shim's own, as CRI's restrict_oom_score_adj does. Here
// on a child whose score was raised first, so that the fallback shows too.
func TestSetOOMScoreAdj(t *testing.T) {
	r := startReaper(t)
	cmd := exec.Command("sleep", "10")
	exit, err := r.Start(cmd)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); <-exit }()
	if err := os.WriteFile(fmt.Sprintf("/proc/%d/oom_score_adj", cmd.Process.Pid), []byte("500"), 0); err != nil {
		t.Fatal(err)
	}
	setOOMScoreAdj(cmd.Process.Pid)
	if got, want := oomScoreAdj(t, cmd.Process.Pid), wantOOMScoreAdj(t); got != want {
		t.Errorf("oom_score_adj %d, want %d", got, want)
	}
}

// A holder that cannot enter its root exits at once, and Start fails
// instead of handing out a pod whose PID 1 has the node's /.
func TestHolderThatCannotEnterItsRootFailsStart(t *testing.T) {
	bothHolders(t, func(t *testing.T) {
		needRoot(t)
		r := startReaper(t)
		defer func(m os.FileMode) { rootMode = m }(rootMode)
		rootMode = 0o700 // uid 65535 cannot search it: fchdir fails
		h, err := Start(Config{ID: "t7", NewPID: true, Reaper: r})
		if err == nil {
			stopAndWait(t, h)
			t.Fatal("Start succeeded with a holder root the holder cannot enter")
		}
		if !strings.Contains(err.Error(), "did not enter its empty root") {
			t.Errorf("Start: %v, want its holder's failure to enter its root", err)
		}
		if hs := holdersNamed("t7"); len(hs) > 0 {
			t.Errorf("holder processes left after a failed start: %v", hs)
		}
	})
}

func readlink(t *testing.T, path string) string {
	t.Helper()
	l, err := os.Readlink(path)
	if err != nil {
		return err.Error()
	}
	return l
}
