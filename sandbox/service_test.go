package sandbox

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"

	"github.com/example/containerd-shim-example-v2/holder"
	sandboxapi "github.com/example/containerd-shim-example-v2/proto/sandbox/v1"
	"github.com/example/containerd-shim-example-v2/reaper"
)

// The test binary doubles as the Go holder where there is no tiny one.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == holder.Action {
		if err := holder.Main(); err != nil {
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func newService(t *testing.T) (*Service, *int) {
	t.Helper()
	r := reaper.New()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go r.Run(ctx)
	idle := new(int)
	return New(Config{Reaper: r, Tasks: func() int { return 0 }, Idle: func() { *idle++ }}), idle
}

// hostNetPod is a PodSandboxConfig with the node's network and a hostname.
func hostNetPod(hostname string, sysctls map[string]string) *sandboxapi.Any {
	return podSandboxConfig(hostname, sysctls, true)
}

// podSandboxConfig is a PodSandboxConfig with a hostname and sysctls, and
// the node's network or (every namespace mode left at POD) the pod's own.
func podSandboxConfig(hostname string, sysctls map[string]string, hostNet bool) *sandboxapi.Any {
	var linux []byte
	if hostNet {
		var nsopts []byte
		nsopts = varintField(nsopts, 1, 2) // network NODE
		var sec []byte
		sec = bytesField(sec, 1, nsopts)
		linux = bytesField(linux, 2, sec)
	}
	for k, v := range sysctls {
		var e []byte
		e = bytesField(e, 1, []byte(k))
		e = bytesField(e, 2, []byte(v))
		linux = bytesField(linux, 3, e)
	}
	var c []byte
	c = bytesField(c, 2, []byte(hostname))
	c = bytesField(c, 8, linux)
	return &sandboxapi.Any{TypeUrl: "runtime.v1.PodSandboxConfig", Value: c}
}

func TestCreateSandboxRefusals(t *testing.T) {
	s, _ := newService(t)
	ctx := context.Background()
	podNet := &sandboxapi.Any{TypeUrl: "runtime.v1.PodSandboxConfig"} // all modes POD
	for _, c := range []struct {
		what string
		req  *sandboxapi.CreateSandboxRequest
		want error
	}{
		{"bad id", &sandboxapi.CreateSandboxRequest{SandboxId: "a/b", BundlePath: t.TempDir()}, errdefs.ErrInvalidArgument},
		{"relative bundle", &sandboxapi.CreateSandboxRequest{SandboxId: "p1", BundlePath: "rel"}, errdefs.ErrInvalidArgument},
		{"missing bundle", &sandboxapi.CreateSandboxRequest{SandboxId: "p1", BundlePath: "/nonexistent/bundle"}, errdefs.ErrNotFound},
		{"missing netns", &sandboxapi.CreateSandboxRequest{SandboxId: "p1", BundlePath: t.TempDir(), NetnsPath: "/nonexistent/netns", Options: podNet}, errdefs.ErrNotFound},
		{"no netns", &sandboxapi.CreateSandboxRequest{SandboxId: "p1", BundlePath: t.TempDir(), Options: podNet}, errdefs.ErrInvalidArgument},
		{"not a netns", &sandboxapi.CreateSandboxRequest{SandboxId: "p1", BundlePath: t.TempDir(), NetnsPath: "/proc/self/status", Options: podNet}, errdefs.ErrInvalidArgument},
		{"a uts namespace", &sandboxapi.CreateSandboxRequest{SandboxId: "p1", BundlePath: t.TempDir(), NetnsPath: "/proc/self/ns/uts", Options: podNet}, errdefs.ErrInvalidArgument},
		{"netns for host network", &sandboxapi.CreateSandboxRequest{SandboxId: "p1", BundlePath: t.TempDir(), NetnsPath: "/proc/self/ns/net", Options: hostNetPod("", nil)}, errdefs.ErrInvalidArgument},
		{"node sysctl", &sandboxapi.CreateSandboxRequest{SandboxId: "p1", BundlePath: t.TempDir(), Options: hostNetPod("", map[string]string{"vm.swappiness": "1"})}, errdefs.ErrInvalidArgument},
		{"other options", &sandboxapi.CreateSandboxRequest{SandboxId: "p1", BundlePath: t.TempDir(), Options: &sandboxapi.Any{TypeUrl: "x.Other", Value: []byte{1}}}, errdefs.ErrInvalidArgument},
		{"a hostname of 65 bytes", &sandboxapi.CreateSandboxRequest{SandboxId: "p1", BundlePath: t.TempDir(), Options: hostNetPod(strings.Repeat("h", 65), nil)}, errdefs.ErrInvalidArgument},
	} {
		_, err := s.CreateSandbox(ctx, c.req)
		if !errors.Is(err, c.want) {
			t.Errorf("CreateSandbox with %s: %v, want %v", c.what, err, c.want)
		}
	}
	if s.Count() != 0 {
		t.Errorf("refused creates left %d sandboxes", s.Count())
	}
	// A bundle another pod has, by a symlink to it: the two would share
	// one record (sandbox.json), which the first's shutdown removes.
	shared := t.TempDir()
	link := filepath.Join(t.TempDir(), "link")
	if err := os.Symlink(shared, link); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateSandbox(ctx, &sandboxapi.CreateSandboxRequest{SandboxId: "s1", BundlePath: shared, Options: hostNetPod("", nil)}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateSandbox(ctx, &sandboxapi.CreateSandboxRequest{SandboxId: "s2", BundlePath: link, Options: hostNetPod("", nil)}); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("CreateSandbox on a symlink to another pod's bundle: %v, want InvalidArgument", err)
	}
	if _, err := s.ShutdownSandbox(ctx, &sandboxapi.ShutdownSandboxRequest{SandboxId: "s1"}); err != nil {
		t.Fatal(err)
	}
	// A pod network whose netns exists (the test's own, by path) is accepted.
	if _, err := s.CreateSandbox(ctx, &sandboxapi.CreateSandboxRequest{SandboxId: "p2", BundlePath: t.TempDir(), NetnsPath: "/proc/self/ns/net", Options: podNet}); err != nil {
		t.Errorf("CreateSandbox with a netns: %v", err)
	}
	if _, err := s.CreateSandbox(ctx, &sandboxapi.CreateSandboxRequest{SandboxId: "p2", BundlePath: t.TempDir(), NetnsPath: "/proc/self/ns/net", Options: podNet}); !errors.Is(err, errdefs.ErrAlreadyExists) {
		t.Errorf("CreateSandbox of an existing id: %v, want AlreadyExists", err)
	}
	// A client other than CRI sends no options: the network namespace it
	// names is the pod's, and a path that is not one is still refused.
	if _, err := s.CreateSandbox(ctx, &sandboxapi.CreateSandboxRequest{SandboxId: "p3", BundlePath: t.TempDir(), NetnsPath: "/proc/self/ns/net"}); err != nil {
		t.Errorf("CreateSandbox with a netns and no options: %v", err)
	} else if p, _ := s.pod("p3"); p.cfg.Network != ModePod {
		t.Errorf("a pod created with a netns and no options has network mode %d, want the pod's", p.cfg.Network)
	}
	if _, err := s.CreateSandbox(ctx, &sandboxapi.CreateSandboxRequest{SandboxId: "p4", BundlePath: t.TempDir(), NetnsPath: "/proc/self/ns/uts"}); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("CreateSandbox with a uts namespace as netns and no options: %v, want InvalidArgument", err)
	}
}

func TestUnknownSandbox(t *testing.T) {
	s, idle := newService(t)
	ctx := context.Background()
	for name, call := range map[string]func() error{
		"Start": func() error {
			_, err := s.StartSandbox(ctx, &sandboxapi.StartSandboxRequest{SandboxId: "x"})
			return err
		},
		"Platform": func() error { _, err := s.Platform(ctx, &sandboxapi.PlatformRequest{SandboxId: "x"}); return err },
		"Stop":     func() error { _, err := s.StopSandbox(ctx, &sandboxapi.StopSandboxRequest{SandboxId: "x"}); return err },
		"Wait": func() error {
			var got error
			s.WaitSandboxLater(&sandboxapi.WaitSandboxRequest{SandboxId: "x"}, func(_ *sandboxapi.WaitSandboxResponse, err error) { got = err })
			return got // an unknown pod is answered at once
		},
		"Status": func() error {
			_, err := s.SandboxStatus(ctx, &sandboxapi.SandboxStatusRequest{SandboxId: "x"})
			return err
		},
		"Ping": func() error { _, err := s.PingSandbox(ctx, &sandboxapi.PingRequest{SandboxId: "x"}); return err },
		"Metrics": func() error {
			_, err := s.SandboxMetrics(ctx, &sandboxapi.SandboxMetricsRequest{SandboxId: "x"})
			return err
		},
		"Update": func() error {
			_, err := s.UpdateSandbox(ctx, &sandboxapi.UpdateSandboxRequest{SandboxId: "x", Fields: []string{"extensions"}})
			return err
		},
		"Shutdown": func() error {
			_, err := s.ShutdownSandbox(ctx, &sandboxapi.ShutdownSandboxRequest{SandboxId: "x"})
			return err
		},
	} {
		if err := call(); !errors.Is(err, errdefs.ErrNotFound) {
			t.Errorf("%s of an unknown sandbox: %v, want NotFound", name, err)
		}
	}
	if *idle != 1 {
		t.Errorf("Idle called %d times after a ShutdownSandbox on an empty service, want 1", *idle)
	}
}

// TestSandboxLifecycle runs a host-network pod through every call with a
// real holder (root), in a bundle outside containerd's layout (so no CRI
// files are made).
func TestSandboxLifecycle(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("starting a holder needs root")
	}
	s, idle := newService(t)
	ctx := context.Background()
	bundle := t.TempDir()
	if _, err := s.CreateSandbox(ctx, &sandboxapi.CreateSandboxRequest{SandboxId: "life", BundlePath: bundle,
		Options: hostNetPod("life-host", map[string]string{"kernel.shm_rmid_forced": "1"})}); err != nil {
		t.Fatal(err)
	}
	st, err := s.SandboxStatus(ctx, &sandboxapi.SandboxStatusRequest{SandboxId: "life"})
	if err != nil || st.State != stateNotReady || st.Pid != 0 {
		t.Fatalf("status of a created sandbox: %v %v", st, err)
	}
	start, err := s.StartSandbox(ctx, &sandboxapi.StartSandboxRequest{SandboxId: "life"})
	if err != nil {
		t.Fatal(err)
	}
	pid := int(start.Pid)
	if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err != nil {
		t.Fatalf("StartSandbox answered pid %d, which does not run: %v", pid, err)
	}
	if link(t, pid, "ipc") == link(t, os.Getpid(), "ipc") {
		t.Errorf("the holder shares the shim's IPC namespace")
	}
	// A host-network pod keeps the node's network and UTS namespaces (and
	// so its name), as a pause container does.
	for _, ns := range []string{"net", "uts"} {
		if link(t, pid, ns) != link(t, os.Getpid(), ns) {
			t.Errorf("a host-network pod's holder is not in the node's %s namespace", ns)
		}
	}
	if _, err := s.StartSandbox(ctx, &sandboxapi.StartSandboxRequest{SandboxId: "life"}); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Errorf("a second StartSandbox: %v, want FailedPrecondition", err)
	}
	st, err = s.SandboxStatus(ctx, &sandboxapi.SandboxStatusRequest{SandboxId: "life", Verbose: true})
	if err != nil || st.State != stateReady || int(st.Pid) != pid || st.Info["holderPid"] != fmt.Sprint(pid) {
		t.Errorf("status of a running sandbox: %v %v", st, err)
	}
	if p, ok := s.HolderPid("life"); !ok || p != pid {
		t.Errorf("HolderPid: %d %v", p, ok)
	}
	if pl, err := s.Platform(ctx, &sandboxapi.PlatformRequest{SandboxId: "life"}); err != nil || pl.Platform.Os != "linux" {
		t.Errorf("Platform: %v %v", pl, err)
	}
	if _, err := s.SandboxMetrics(ctx, &sandboxapi.SandboxMetricsRequest{SandboxId: "life"}); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("metrics of a pod without a cgroup parent: %v, want NotFound", err)
	}
	// containerd 2.4's record of a resized pod: accepted, and the pod runs on.
	if _, err := s.UpdateSandbox(ctx, &sandboxapi.UpdateSandboxRequest{SandboxId: "life", Fields: []string{"extensions"}}); err != nil {
		t.Errorf("UpdateSandbox of a running pod: %v", err)
	}
	if st, err := s.SandboxStatus(ctx, &sandboxapi.SandboxStatusRequest{SandboxId: "life"}); err != nil || st.State != stateReady || int(st.Pid) != pid {
		t.Errorf("status after UpdateSandbox: %v %v", st, err)
	}
	waited := make(chan *sandboxapi.WaitSandboxResponse, 2)
	answer := func(r *sandboxapi.WaitSandboxResponse, _ error) { waited <- r }
	s.WaitSandboxLater(&sandboxapi.WaitSandboxRequest{SandboxId: "life"}, answer)
	// A second wait, withdrawn (containerd hung up): never answered.
	withdraw := s.WaitSandboxLater(&sandboxapi.WaitSandboxRequest{SandboxId: "life"}, func(*sandboxapi.WaitSandboxResponse, error) {
		t.Error("a withdrawn WaitSandbox was answered")
	})
	withdraw()
	select {
	case <-waited:
		t.Fatal("WaitSandbox returned while the pod runs")
	case <-time.After(100 * time.Millisecond):
	}
	if _, err := s.StopSandbox(ctx, &sandboxapi.StopSandboxRequest{SandboxId: "life"}); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-waited:
		if r == nil || r.ExitedAt == nil {
			t.Errorf("WaitSandbox after Stop: %v", r)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("WaitSandbox did not return after StopSandbox")
	}
	if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err == nil {
		t.Errorf("holder %d still in /proc after StopSandbox", pid)
	}
	if _, err := s.StopSandbox(ctx, &sandboxapi.StopSandboxRequest{SandboxId: "life"}); err != nil {
		t.Errorf("a second StopSandbox: %v", err)
	}
	// A wait on a stopped pod is answered at once: with nothing more to
	// happen to the pod. Not necessarily before WaitSandboxLater returns:
	// while the stop's own answer (above) has not quite finished, the pod's
	// waiters still run, and this one is answered on a goroutine of its own
	// (waitlist.List.Add), as the server allows.
	s.WaitSandboxLater(&sandboxapi.WaitSandboxRequest{SandboxId: "life"}, answer)
	select {
	case r := <-waited:
		if r == nil || r.ExitedAt == nil {
			t.Errorf("WaitSandbox on a stopped pod: %v", r)
		}
	case <-time.After(5 * time.Second):
		t.Error("WaitSandbox on a stopped pod was not answered")
	}
	if _, err := s.ShutdownSandbox(ctx, &sandboxapi.ShutdownSandboxRequest{SandboxId: "life"}); err != nil {
		t.Fatal(err)
	}
	if s.Count() != 0 || *idle != 1 {
		t.Errorf("after ShutdownSandbox: %d sandboxes, Idle called %d times", s.Count(), *idle)
	}
	if entries, _ := os.ReadDir(bundle); len(entries) > 0 {
		t.Errorf("left in the bundle: %v", entries)
	}
}

func link(t *testing.T, pid int, ns string) string {
	t.Helper()
	l, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/%s", pid, ns))
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// TestCleanupRecord: setUp records and makes a pod's files; Cleanup (as
// `delete` runs it after a killed shim) removes them and the record, and
// leaves what existed before; a bundle without a record is left alone.
func TestCleanupRecord(t *testing.T) {
	bundle := t.TempDir()
	if err := Cleanup(bundle); err != nil {
		t.Errorf("Cleanup of a bundle without a record: %v", err)
	}
	area := t.TempDir()
	sandboxes := filepath.Join(area, "sandboxes") // CRI's, shared by pods
	if err := os.Mkdir(sandboxes, 0o755); err != nil {
		t.Fatal(err)
	}
	root := filepath.Join(sandboxes, "p")
	f := &files{bundle: bundle}
	// IPC of the node: no /dev/shm mount to make.
	if err := f.setUp(PodConfig{IPC: ModeNode, Hostname: "p-host"}, root, filepath.Join(area, "state"), true); err != nil {
		t.Fatal(err)
	}
	if data, err := os.ReadFile(filepath.Join(root, hostnameFile)); err != nil || string(data) != "p-host\n" {
		t.Errorf("hostname file: %q %v", data, err)
	}
	for _, name := range []string{hostsFile, resolvFile, recordFile} {
		dir := root
		if name == recordFile {
			dir = bundle
		}
		if _, err := os.Stat(filepath.Join(dir, name)); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	if err := Cleanup(bundle); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{root, filepath.Join(bundle, recordFile)} {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("%s left after Cleanup (%v)", p, err)
		}
	}
	if _, err := os.Stat(sandboxes); err != nil {
		t.Errorf("Cleanup removed a directory it did not make: %v", err)
	}
}

func TestCRIDirs(t *testing.T) {
	base := t.TempDir()
	state := filepath.Join(base, "state", controllerDir, "k8s.io", "pod1")
	work := filepath.Join(base, "root", controllerDir, "k8s.io", "pod1")
	for _, d := range []string{state, work} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink(work, filepath.Join(state, workLink)); err != nil {
		t.Fatal(err)
	}
	root, st, ok := criDirs(state, "pod1")
	if !ok || root != filepath.Join(base, "root", criDir, sandboxesDir, "pod1") || st != filepath.Join(base, "state", criDir, sandboxesDir, "pod1") {
		t.Errorf("criDirs: %q %q %v", root, st, ok)
	}
	if _, _, ok := criDirs(state, "other"); ok {
		t.Errorf("criDirs accepted a bundle of another id")
	}
	if _, _, ok := criDirs(t.TempDir(), "pod1"); ok {
		t.Errorf("criDirs accepted a bundle outside containerd's layout")
	}
}

// TestStopSandboxWhoseHolderIsNotReaped: a holder killed but not reaped in
// time (here the reaper is paused, as an upgrade pauses it) makes StopSandbox
// answer DeadlineExceeded, which CRI retries, and leaves the pod running; the
// retry after the exit is recorded succeeds.
func TestStopSandboxWhoseHolderIsNotReaped(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("starting a holder needs root")
	}
	r := reaper.New()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go r.Run(ctx)
	s := New(Config{Reaper: r, Tasks: func() int { return 0 }, Idle: func() {}, StopTimeout: 300 * time.Millisecond})
	if _, err := s.CreateSandbox(ctx, &sandboxapi.CreateSandboxRequest{SandboxId: "slow", BundlePath: t.TempDir(),
		Options: hostNetPod("slow-host", nil)}); err != nil {
		t.Fatal(err)
	}
	start, err := s.StartSandbox(ctx, &sandboxapi.StartSandboxRequest{SandboxId: "slow"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.ShutdownSandbox(ctx, &sandboxapi.ShutdownSandboxRequest{SandboxId: "slow"})
	if !r.Pause(5 * time.Second) {
		t.Fatal("the reaper did not pause")
	}
	resumed := false
	defer func() {
		if !resumed {
			r.Resume()
		}
	}()
	_, err = s.StopSandbox(ctx, &sandboxapi.StopSandboxRequest{SandboxId: "slow"})
	if !errdefs.IsDeadlineExceeded(err) {
		t.Fatalf("StopSandbox of a holder that is not reaped: %v, want DeadlineExceeded", err)
	}
	if st, err := s.SandboxStatus(ctx, &sandboxapi.SandboxStatusRequest{SandboxId: "slow"}); err != nil || st.State != stateReady {
		t.Errorf("status after a timed-out stop: %v %v, want ready", st, err)
	}
	r.Resume()
	resumed = true
	if _, err := s.StopSandbox(ctx, &sandboxapi.StopSandboxRequest{SandboxId: "slow"}); err != nil {
		t.Fatalf("StopSandbox once the holder is reaped: %v", err)
	}
	if _, err := os.Stat(fmt.Sprintf("/proc/%d", start.Pid)); err == nil {
		t.Errorf("holder %d still in /proc after StopSandbox", start.Pid)
	}
}

// A WaitSandbox answer still being written when ShutdownSandbox removes its
// pod is owed: an upgrade waits for it (Handable), as it does for one
// registered after the pod left, whose lookup came first.
func TestAnUpgradeWaitsForWaitSandboxAnswers(t *testing.T) {
	s, _ := newService(t)
	ctx := context.Background()
	if _, err := s.CreateSandbox(ctx, &sandboxapi.CreateSandboxRequest{SandboxId: "w", BundlePath: t.TempDir(),
		Options: hostNetPod("w-host", nil)}); err != nil {
		t.Fatal(err)
	}
	p, err := s.pod("w")
	if err != nil {
		t.Fatal(err)
	}
	gate, writing := make(chan struct{}), make(chan struct{})
	s.WaitSandboxLater(&sandboxapi.WaitSandboxRequest{SandboxId: "w"}, func(*sandboxapi.WaitSandboxResponse, error) {
		close(writing)
		<-gate
	})
	if _, err := s.StopSandbox(ctx, &sandboxapi.StopSandboxRequest{SandboxId: "w"}); err != nil {
		t.Fatal(err)
	}
	<-writing
	if _, err := s.ShutdownSandbox(ctx, &sandboxapi.ShutdownSandboxRequest{SandboxId: "w"}); err != nil {
		t.Fatal(err)
	}
	if err := s.Handable(); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Fatalf("Handable while a shut-down pod's WaitSandbox is being answered: %v, want FailedPrecondition", err)
	}
	// A wait that found the pod before it left, registered now.
	late := make(chan struct{})
	p.onDone(func() { <-late })
	close(gate)
	time.Sleep(20 * time.Millisecond) // the first answer is written
	if err := s.Handable(); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Fatalf("Handable while a late WaitSandbox is being answered: %v, want FailedPrecondition", err)
	}
	close(late)
	for deadline := time.Now().Add(5 * time.Second); s.Handable() != nil; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("Handable after the answers: %v", s.Handable())
		}
	}
}

// A sysctl value the kernel refuses (or a sysctl it does not have) fails
// StartSandbox as the request's mistake, InvalidArgument, and leaves
// nothing: it reached the wire as Unknown. (From a review.)
func TestStartSandboxRefusedSysctlIsInvalidArgument(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("starting a holder needs root")
	}
	for name, sysctls := range map[string]map[string]string{
		"a value not a number":      {"kernel.shm_rmid_forced": "abc"},
		"a sysctl the kernel lacks": {"fs.mqueue.no_such_sysctl": "1"},
	} {
		t.Run(name, func(t *testing.T) {
			s, _ := newService(t)
			ctx := context.Background()
			bundle := t.TempDir()
			if _, err := s.CreateSandbox(ctx, &sandboxapi.CreateSandboxRequest{SandboxId: "bad", BundlePath: bundle, Options: hostNetPod("h", sysctls)}); err != nil {
				if errors.Is(err, errdefs.ErrInvalidArgument) {
					return // refused even earlier
				}
				t.Fatal(err)
			}
			_, err := s.StartSandbox(ctx, &sandboxapi.StartSandboxRequest{SandboxId: "bad"})
			if !errors.Is(err, errdefs.ErrInvalidArgument) {
				t.Errorf("StartSandbox: %v, want InvalidArgument", err)
			}
			if entries, _ := os.ReadDir(bundle); len(entries) > 0 {
				t.Errorf("a failed StartSandbox left %v", entries)
			}
			_, _ = s.ShutdownSandbox(ctx, &sandboxapi.ShutdownSandboxRequest{SandboxId: "bad"})
		})
	}
}

// A ShutdownSandbox that comes late, after the pod was shut down and a new
// one created under the same id and bundle, leaves the new pod and its
// record alone. (From a review.)
func TestLateShutdownLeavesANewPodOfTheSameID(t *testing.T) {
	s, _ := newService(t)
	ctx := context.Background()
	bundle := t.TempDir()
	req := &sandboxapi.CreateSandboxRequest{SandboxId: "r", BundlePath: bundle, Options: hostNetPod("", nil)}
	if _, err := s.CreateSandbox(ctx, req); err != nil {
		t.Fatal(err)
	}
	old, err := s.pod("r")
	if err != nil {
		t.Fatal(err)
	}
	old.op.Lock() // holds the late one back after it has found the pod
	late := make(chan error, 1)
	go func() {
		_, err := s.ShutdownSandbox(ctx, &sandboxapi.ShutdownSandboxRequest{SandboxId: "r"})
		late <- err
	}()
	time.Sleep(50 * time.Millisecond)
	// The first shutdown, as ShutdownSandbox does it; then the new pod.
	if err := errors.Join(old.stopLocked(time.Second), old.files.cleanup()); err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	delete(s.pods, "r")
	s.mu.Unlock()
	if _, err := s.CreateSandbox(ctx, req); err != nil {
		t.Fatal(err)
	}
	newPod, _ := s.pod("r")
	newPod.files.rec.Cgroup = "/marker"
	if err := newPod.files.save(); err != nil {
		t.Fatal(err)
	}
	old.op.Unlock()
	if err := <-late; err != nil {
		t.Fatal(err)
	}
	if _, err := s.SandboxStatus(ctx, &sandboxapi.SandboxStatusRequest{SandboxId: "r"}); err != nil {
		t.Errorf("the new pod r, never shut down, is gone: %v", err)
	}
	if _, err := os.Stat(filepath.Join(bundle, recordFile)); err != nil {
		t.Errorf("the new pod's record is gone: %v", err)
	}
	newPod.files.rec = record{}
	_, _ = s.ShutdownSandbox(ctx, &sandboxapi.ShutdownSandboxRequest{SandboxId: "r"})
}
