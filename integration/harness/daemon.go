package harness

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
)

// Bounds used while starting and stopping a daemon.
var (
	DaemonStartTimeout = 30 * time.Second
	DaemonStopTimeout  = 10 * time.Second
)

// Daemon is a private containerd: its own root, state, sockets, config and log, started
// by the harness and torn down by Stop. Nothing of it is shared with other daemons on the
// host except the host-wide directories containerd and runc always use
// (/run/containerd/s, /run/containerd/runc/<ns>, /run/containerd/fifo), which is why every
// test uses a namespace of its own.
type Daemon struct {
	Flavor       string // Flavor16, Flavor2x or a release line ("2.2"); see env.go
	Base         string // private directory holding everything below
	Root         string // containerd --root (persistent data: content, snapshots)
	State        string // containerd state (bundles, rootfs mounts)
	Address      string // gRPC socket path
	TTRPCAddress string // ttrpc socket path (where shims publish events)
	ConfigPath   string // config.toml written by the harness
	LogPath      string // daemon's stdout+stderr
	BinDir       string // per-run bin dir, first on the daemon's PATH (holds the shim under test)
	FIFODir      string // where the harness's cio FIFOs are created
	Containerd   string // containerd binary
	CtrPath      string // the flavor's ctr binary
	PATH         string // PATH given to the daemon (and so to the shims it starts)

	variant daemonVariant // set by DaemonOptions (variant.go)

	cmd    *exec.Cmd
	exited chan struct{}
	// socketsAtStart are the shim sockets that existed before this daemon: Stop
	// removes only newer ones, and only dead ones (see removeDeadShimSockets).
	socketsAtStart map[string]bool
	waitErr        error
	logFile        *os.File

	mu         sync.Mutex
	client     *containerd.Client
	namespaces []string
	stopped    bool
}

// SkipFlavorUnderCrun skips a test of a containerd other than 1.6 when crun is
// the runtime under test: the specs the 2.x ctr and CRI write (version 1.3.0)
// are refused by crun 1.8 ("unknown version specified"). Every daemon a test
// gets, its own (StartDaemon) or a shared one, is asked for here.
func SkipFlavorUnderCrun(t testing.TB, flavor string) {
	t.Helper()
	if CrunUnderTest() && flavor != Flavor16 {
		t.Skipf("containerd %s with crun as the runtime under test: the specs its ctr and CRI write (version 1.3.0) are refused by crun 1.8 (\"unknown version specified\"); the crun lane runs containerd 1.6", flavor)
	}
}

// StartDaemon starts a private daemon of the given flavor ("1.6" or "2.x") and registers
// its teardown with t.Cleanup (which also runs when the test fails). A missing prerequisite
// fails the test; it is never skipped (a flavor crun cannot serve is: SkipFlavorUnderCrun).
func StartDaemon(t testing.TB, flavor string, opts ...DaemonOption) *Daemon {
	t.Helper()
	SkipFlavorUnderCrun(t, flavor)
	d, err := NewDaemon(flavor, opts...)
	if err != nil {
		t.Fatalf("start containerd %s: %v", flavor, err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("containerd %s log (last 60 lines of %s):\n%s", flavor, d.LogPath, d.LogTail(60))
		}
		if err := d.Stop(); err != nil {
			t.Errorf("stop containerd %s: %v", flavor, err)
		}
	})
	return d
}

// NewDaemon starts a private daemon without a testing.TB; the caller must call Stop.
// Use it for daemons shared by several tests (TestMain).
func NewDaemon(flavor string, opts ...DaemonOption) (_ *Daemon, retErr error) {
	binDir, err := flavorBinDir(flavor)
	if err != nil {
		return nil, err
	}
	d := &Daemon{
		Flavor:         flavor,
		Containerd:     filepath.Join(binDir, "containerd"),
		CtrPath:        filepath.Join(binDir, "ctr"),
		exited:         make(chan struct{}),
		socketsAtStart: socketsIn(ShimSocketDir),
	}
	// $TEST_LEGACY_CGROUPS makes every daemon WithLegacyCgroups: for running a whole
	// selection under crun 1.8 (TEST_RUNC=/usr/bin/crun), which refuses the hybrid layout.
	d.variant.legacyCgroups = os.Getenv("TEST_LEGACY_CGROUPS") != ""
	for _, o := range opts {
		o(&d.variant)
	}
	for _, p := range []string{d.Containerd, d.CtrPath} {
		if _, err := os.Stat(p); err != nil {
			return nil, fmt.Errorf("containerd %s needs %s (run `make deps` / scripts/deps.sh): %w", flavor, p, err)
		}
	}
	if err := os.MkdirAll(BaseDir, 0o711); err != nil {
		return nil, err
	}
	sweepOnce.Do(func() { SweepStale(os.Stderr) })
	d.Base, err = os.MkdirTemp(BaseDir, "")
	if err != nil {
		return nil, err
	}
	// The process that owns the directory: while it lives, no sweep of another run
	// touches it, even when its containerd is down for a restart test.
	_ = os.WriteFile(filepath.Join(d.Base, ownerFileName), []byte(strconv.Itoa(os.Getpid())), 0o600)
	defer func() {
		if retErr != nil {
			if d.cmd != nil {
				if tail := d.LogTail(40); tail != "" {
					retErr = fmt.Errorf("%w\ncontainerd log tail:\n%s", retErr, tail)
				}
			}
			_ = d.Stop()
		}
	}()
	d.Root = filepath.Join(d.Base, "root")
	d.State = filepath.Join(d.Base, "state")
	d.Address = filepath.Join(d.Base, "c.sock")
	d.TTRPCAddress = d.Address + ".ttrpc"
	d.ConfigPath = filepath.Join(d.Base, "config.toml")
	d.LogPath = filepath.Join(d.Base, "containerd.log")
	d.BinDir = filepath.Join(d.Base, "bin")
	d.FIFODir = filepath.Join(d.Base, "fifo")
	for _, dir := range []string{d.Root, d.State, d.BinDir, d.FIFODir} {
		if err := os.MkdirAll(dir, 0o711); err != nil {
			return nil, err
		}
	}
	if len(d.TTRPCAddress) > 100 {
		return nil, fmt.Errorf("socket path %s too long for a unix socket", d.TTRPCAddress)
	}

	// The shim under test goes into a per-run bin dir that is first on the daemon's PATH.
	// It is copied, not linked, so a rebuild during the run cannot change it under us.
	if shim := ShimUnderTest(); shim != "" {
		if err := copyFile(shim, filepath.Join(d.BinDir, ShimBinaryName), 0o755); err != nil {
			return nil, fmt.Errorf("install shim under test %s: %w", shim, err)
		}
	}
	// BASELINE_SHIM (benchmarks): another build of this shim stands in for the stock
	// runc-v2 shim, so two builds are compared side by side in one run.
	if base := os.Getenv("BASELINE_SHIM"); base != "" {
		if err := copyFile(base, filepath.Join(d.BinDir, "containerd-shim-runc-v2"), 0o755); err != nil {
			return nil, fmt.Errorf("install baseline shim %s: %w", base, err)
		}
	}
	if runc := d.variant.runcBinary(); runc != "" {
		if _, err := os.Stat(runc); err != nil {
			return nil, fmt.Errorf("runc under test (TEST_RUNC / WithRunc): %w (run `make deps`)", err)
		}
		if err := os.Symlink(runc, filepath.Join(d.BinDir, "runc")); err != nil {
			return nil, err
		}
	}
	d.PATH = d.BinDir + string(os.PathListSeparator) + binDir + string(os.PathListSeparator) + os.Getenv("PATH")

	// Prerequisites the shims need, checked on the daemon's PATH so the message is clear.
	rt := Runtime()
	shimName := RuntimeBinaryName(rt)
	if filepath.IsAbs(rt) {
		if _, err := os.Stat(rt); err != nil {
			return nil, fmt.Errorf("runtime %s: %w", rt, err)
		}
	} else if lookPathIn(shimName, d.PATH) == "" {
		hint := ""
		if shimName == ShimBinaryName {
			hint = " (set SHIM_BINARY or run `make build` so ../bin/" + ShimBinaryName + " exists)"
		}
		return nil, fmt.Errorf("runtime %s needs %s on containerd's PATH %s%s", rt, shimName, d.PATH, hint)
	}
	if lookPathIn("runc", d.PATH) == "" {
		return nil, fmt.Errorf("runc not found on PATH %s", d.PATH)
	}

	if err := d.prepareVariant(); err != nil {
		return nil, err
	}
	if err := os.WriteFile(d.ConfigPath, []byte(d.config()), 0o600); err != nil {
		return nil, err
	}
	if d.variant.rootless != nil {
		// After the config is written: the user must be able to read it.
		if err := d.prepareRootless(); err != nil {
			return nil, err
		}
	}
	d.logFile, err = os.OpenFile(d.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	cmd := d.daemonCommand()
	cmd.Dir = d.Base // containerd looks for shims in its cwd first: keep that empty of shims
	cmd.Stdout = d.logFile
	cmd.Stderr = d.logFile
	cmd.Env = append(filteredEnv("PATH", "CONTAINERD_ADDRESS", "CONTAINERD_NAMESPACE", "NOTIFY_SOCKET"), "PATH="+d.PATH)
	// Own process group (no terminal signals); SIGTERM if the test process dies.
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid = true
	cmd.SysProcAttr.Pdeathsig = syscall.SIGTERM
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", d.Containerd, err)
	}
	d.cmd = cmd
	_ = os.WriteFile(filepath.Join(d.Base, pidFileName), []byte(strconv.Itoa(cmd.Process.Pid)), 0o600)
	go func() {
		d.waitErr = cmd.Wait()
		close(d.exited)
	}()

	if err := d.waitServing(); err != nil {
		return nil, err
	}
	return d, nil
}

// filteredEnv returns the test process's environment without the named variables.
func filteredEnv(drop ...string) []string {
	var env []string
outer:
	for _, kv := range os.Environ() {
		for _, k := range drop {
			if strings.HasPrefix(kv, k+"=") {
				continue outer
			}
		}
		env = append(env, kv)
	}
	return env
}

// config renders the daemon's config file: private root/state/sockets, debug log level,
// CRI (and in 2.x NRI, which uses a host-wide socket) disabled.
func (d *Daemon) config() string {
	var b strings.Builder
	disabled := []string{`"io.containerd.grpc.v1.cri"`}
	version := 2
	if d.Is2x() {
		version = 3
		disabled = append(disabled,
			`"io.containerd.cri.v1.images"`,
			`"io.containerd.cri.v1.runtime"`,
			`"io.containerd.podsandbox.controller.v1.podsandbox"`,
			`"io.containerd.nri.v1.nri"`,
		)
	}
	disabled = d.variantDisabled(disabled)
	fmt.Fprintf(&b, "version = %d\n", version)
	fmt.Fprintf(&b, "root = %q\nstate = %q\n", d.Root, d.State)
	fmt.Fprintf(&b, "disabled_plugins = [%s]\n\n", strings.Join(disabled, ", "))
	fmt.Fprintf(&b, "[grpc]\n  address = %q\n\n", d.Address)
	fmt.Fprintf(&b, "[ttrpc]\n  address = %q\n\n", d.TTRPCAddress)
	fmt.Fprintf(&b, "[debug]\n  address = \"\"\n  level = \"debug\"\n\n")
	fmt.Fprintf(&b, "[metrics]\n  address = \"\"\n\n")
	fmt.Fprintf(&b, "[plugins.\"io.containerd.internal.v1.opt\"]\n  path = %q\n", filepath.Join(d.Base, "opt"))
	b.WriteString(d.variantConfig())
	return b.String()
}

func (d *Daemon) waitServing() error {
	deadline := time.Now().Add(DaemonStartTimeout)
	for {
		select {
		case <-d.exited:
			return fmt.Errorf("containerd %s exited during startup: %v", d.Flavor, d.waitErr)
		default:
		}
		if _, err := os.Stat(d.Address); err == nil {
			c, err := containerd.New(d.Address, containerd.WithTimeout(2*time.Second))
			if err == nil {
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				ok, err := c.IsServing(ctx)
				cancel()
				if err == nil && ok {
					d.mu.Lock()
					d.client = c
					d.mu.Unlock()
					return nil
				}
				c.Close()
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("containerd %s did not answer on %s within %v", d.Flavor, d.Address, DaemonStartTimeout)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Client returns the daemon's Go client (shared; do not Close it). Set the namespace on
// the context (namespaces.WithNamespace) for every call.
func (d *Daemon) Client() *containerd.Client {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.client
}

// Is2x reports whether the daemon is containerd 2.0 or newer (config version 3, the
// split CRI plugins, the shim manager's env setting, Task API v3).
func (d *Daemon) Is2x() bool { return FlavorMajor(d.Flavor) == 2 }

// Pid is the daemon's process id.
func (d *Daemon) Pid() int {
	if d.cmd == nil || d.cmd.Process == nil {
		return 0
	}
	return d.cmd.Process.Pid
}

// Exited reports whether the daemon process has exited.
func (d *Daemon) Exited() bool {
	select {
	case <-d.exited:
		return true
	default:
		return false
	}
}

// LogSize is the current size of the daemon's log; pass it to LogSince later.
func (d *Daemon) LogSize() int64 {
	st, err := os.Stat(d.LogPath)
	if err != nil {
		return 0
	}
	return st.Size()
}

// LogSince returns what the daemon logged after offset, at most the last max bytes.
func (d *Daemon) LogSince(offset int64, max int) string {
	f, err := os.Open(d.LogPath)
	if err != nil {
		return ""
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return ""
	}
	if st.Size()-offset > int64(max) {
		offset = st.Size() - int64(max)
	}
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		return ""
	}
	data, _ := io.ReadAll(f)
	return string(data)
}

// LogTail returns the last n lines of the daemon's log.
func (d *Daemon) LogTail(n int) string {
	data := d.LogSince(0, 256<<10)
	lines := strings.Split(strings.TrimRight(data, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// TrackNamespace records a namespace used on this daemon so that Stop removes its tasks and
// containers and cleans runc state left in it. NewNamespace does this itself.
func (d *Daemon) TrackNamespace(ns string) {
	d.mu.Lock()
	d.namespaces = append(d.namespaces, ns)
	d.mu.Unlock()
	// Also on disk, so that SweepStale can clean up after a test process that was killed.
	if f, err := os.OpenFile(filepath.Join(d.Base, nsFileName), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600); err == nil {
		fmt.Fprintln(f, ns)
		f.Close()
	}
}

// Stop tears the daemon down; it is idempotent and does as much as it can even after
// errors: removes the tasks and containers of every namespace the harness created,
// terminates the daemon (SIGTERM, then SIGKILL after DaemonStopTimeout), kills the shims it
// left behind (found by its socket address on their command line), force-deletes leftover
// runc containers of those namespaces, unmounts everything under its directory (deepest
// first) and removes the directory. It only ever signals processes this daemon started.
func (d *Daemon) Stop() error {
	d.mu.Lock()
	if d.stopped {
		d.mu.Unlock()
		return nil
	}
	d.stopped = true
	client := d.client
	nss := append([]string(nil), d.namespaces...)
	d.mu.Unlock()

	var errs []error
	if client != nil && !d.Exited() {
		// One budget for all namespaces: what is still stuck after it is killed below.
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		for _, ns := range nss {
			if ctx.Err() != nil {
				break
			}
			if err := CleanupNamespace(ctx, client, ns); err != nil {
				errs = append(errs, fmt.Errorf("cleanup namespace %s: %w", ns, err))
			}
		}
		cancel()
	}
	if client != nil {
		client.Close()
	}
	if d.cmd != nil && d.cmd.Process != nil && !d.Exited() {
		_ = d.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-d.exited:
		case <-time.After(DaemonStopTimeout):
			errs = append(errs, fmt.Errorf("containerd %s did not stop on SIGTERM within %v; killed", d.Flavor, DaemonStopTimeout))
			_ = d.cmd.Process.Kill()
			<-d.exited
		}
	}
	if d.Address != "" {
		if procs := d.ShimProcesses("", ""); len(procs) > 0 {
			for _, p := range procs {
				_ = syscall.Kill(p.Pid, syscall.SIGKILL)
			}
			waitGone(procs, 5*time.Second)
			// A killed shim cannot remove its sockets; remove the ones the stock naming
			// scheme gives (unique to this daemon's address).
			d.removeShimSockets(procs)
		}
	}
	d.removeDeadShimSockets()
	if err := d.teardownPodNetwork(); err != nil {
		errs = append(errs, err)
	}
	for _, ns := range nss {
		if err := d.forceDeleteRunc(ns); err != nil {
			errs = append(errs, err)
		}
		// The runtime's /<ns> cgroup parent (see NewNamespace).
		if err := RemoveCgroup("/" + ns); err != nil {
			errs = append(errs, err)
		}
	}
	if err := d.removeRootless(); err != nil {
		errs = append(errs, err)
	}
	if d.Base != "" {
		if err := UnmountUnder(d.Base); err != nil {
			errs = append(errs, err)
		}
		if err := os.RemoveAll(d.Base); err != nil {
			errs = append(errs, err)
		}
	}
	if d.logFile != nil {
		d.logFile.Close()
	}
	return errors.Join(errs...)
}

// forceDeleteRunc removes the runc containers of this daemon left in <RuncRoot>/<ns>
// (their shim is gone), and the namespace directory itself once empty. The state
// directory of a namespace with a fixed name (Docker's "moby", CRI's "k8s.io") is shared
// with every other daemon on the host, another test run's among them: a container whose
// bundle is not under this daemon's directory is not touched (ownsRuncState).
func (d *Daemon) forceDeleteRunc(ns string) error {
	dir := filepath.Join(RuncRoot, ns)
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	for _, e := range entries {
		if !e.IsDir() || !d.ownsRuncState(filepath.Join(dir, e.Name())) {
			continue
		}
		forceDeleteRuntimeContainer(dir, e.Name())
	}
	// Only an empty namespace dir is removed; anything else is reported.
	if err := os.Remove(dir); err != nil && !os.IsNotExist(err) && !errors.Is(err, syscall.ENOTEMPTY) && !errors.Is(err, syscall.EEXIST) {
		return fmt.Errorf("runc state left in %s: %w", dir, err)
	}
	if d.ownedRuncStateIn(dir) {
		return fmt.Errorf("runc state of this daemon left in %s", dir)
	}
	return nil
}

// ownedRuncStateIn reports whether dir (<RuncRoot>/<ns>) still holds a container of this
// daemon's.
func (d *Daemon) ownedRuncStateIn(dir string) bool {
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if e.IsDir() && d.ownsRuncState(filepath.Join(dir, e.Name())) {
			return true
		}
	}
	return false
}

// ownsRuncState reports whether the runc container whose state is in dir belongs to this
// daemon: runc records the bundle as a label ("bundle=<path>"), and this daemon's bundles
// are under its base directory. A state that cannot be read (being written, or not
// runc's) counts as this daemon's, so that nothing of its own goes unreported.
func (d *Daemon) ownsRuncState(dir string) bool {
	bundle, ok := runtimeStateBundle(dir)
	if !ok || d.Base == "" {
		return true
	}
	return bundle == d.Base || strings.HasPrefix(bundle, d.Base+"/")
}

// runtimeStateBundle reads the bundle of the container whose runtime state is
// in dir: runc's state.json records it as a label, crun's status file as a
// field of its own.
func runtimeStateBundle(dir string) (string, bool) {
	if raw, err := os.ReadFile(filepath.Join(dir, "state.json")); err == nil {
		var st struct {
			Config struct {
				Labels []string `json:"labels"`
			} `json:"config"`
		}
		if json.Unmarshal(raw, &st) != nil {
			return "", false
		}
		for _, l := range st.Config.Labels {
			if bundle, ok := strings.CutPrefix(l, "bundle="); ok {
				return bundle, true
			}
		}
		return "", false
	}
	raw, err := os.ReadFile(filepath.Join(dir, "status"))
	if err != nil {
		return "", false
	}
	var st struct {
		Bundle string `json:"bundle"`
	}
	if json.Unmarshal(raw, &st) != nil || st.Bundle == "" {
		return "", false
	}
	return st.Bundle, true
}

// removeSocket removes path if it is a unix socket.
func removeSocket(path string) {
	if st, err := os.Lstat(path); err == nil && st.Mode()&os.ModeSocket != 0 {
		_ = os.Remove(path)
	}
}
