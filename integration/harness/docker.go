package harness

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Docker Engine as a caller of the runtime under test: a private dockerd (moby v2) on a
// private containerd of the harness. Everything of it lives under <containerd Base>/dk/:
//
//	dk/docker.sock   the API socket (DOCKER_HOST=unix://...)
//	dk/daemon.json   registers DockerRuntimeName ("example") with runtimeType Runtime(); live-restore
//	dk/dockerd.log   dockerd's stdout and stderr
//	dk/dockerd.pid   --pidfile
//	dk/root/         --data-root (dockerd bind-mounts it onto itself while it runs)
//	dk/x/            --exec-root (netns bind mounts, FIFOs, libnetwork's socket)
//	dk/cli/          DOCKER_CONFIG of the CLI the harness runs
//
// Its containers live in a containerd namespace of their own (Namespace, "dk-<rand>", not
// docker's default "moby", which a host-wide runc state dir and a real Docker would share)
// under a cgroup parent of the same name (CgroupParent "/dk-<rand>", not docker's default
// "/docker"). The namespace is tracked on the containerd Daemon, so its Stop cleans what
// dockerd left there (tasks, containers, runc state, the cgroup parent); Docker.Stop handles
// dockerd's side (containers removed, dockerd stopped by PID, its mounts and dirs).

// DockerVersion is the Docker Engine release scripts/deps-docker.sh builds.
const DockerVersion = "v2.0.0-beta.24"

// DockerRuntimeName is the runtime name the private dockerd's daemon.json registers for the
// runtime under test (`docker run --runtime example`).
const DockerRuntimeName = "example"

// DockerRunc is the runc the Docker tests give containerd: dockerd's specs carry a time
// namespace, which runc supports from 1.2 on (Debian's 1.1.5 fails with
// `namespace {"time" ""} does not exist`). scripts/deps.sh builds it.
var DockerRunc = "/opt/runc/v1.5.1/runc"

// Bounds used while starting and stopping dockerd.
var (
	// dockerd answers in well under a second here; buildkit's setup may take a few.
	DockerStartTimeout = 60 * time.Second
	// Stop removes the containers before it signals dockerd, so its shutdown is quick.
	DockerStopTimeout = 20 * time.Second
	// DockerCallTimeout bounds each docker CLI call Stop makes.
	DockerCallTimeout = 30 * time.Second
)

// dockerShutdownTimeout is dockerd's --shutdown-timeout (seconds it gives containers still
// running when it stops; docker's default is 15): Stop removed them already, and a test
// that failed half-way should not wait long for what is left.
const dockerShutdownTimeout = 3

// dockerPluginDir is the host-wide socket directory dockerd creates at startup whatever its
// roots are. Stop removes it (and /run/docker) again when they did not exist before and are
// empty.
const dockerPluginDir = "/run/docker/plugins"

// DockerdPath is the dockerd binary: $DOCKERD, else /opt/moby/<DockerVersion>/bin/dockerd.
func DockerdPath() string {
	if p := os.Getenv("DOCKERD"); p != "" {
		return p
	}
	return filepath.Join("/opt/moby", DockerVersion, "bin", "dockerd")
}

// DockerCLIPath is the docker CLI: $DOCKER_CLI, else docker on PATH, else "".
func DockerCLIPath() string {
	if p := os.Getenv("DOCKER_CLI"); p != "" {
		return p
	}
	p, err := exec.LookPath("docker")
	if err != nil {
		return ""
	}
	return p
}

// DockerMissing says why the Docker tests cannot run here (dockerd is not installed), or
// returns "" when dockerd is there.
func DockerMissing() string {
	if _, err := os.Stat(DockerdPath()); err != nil {
		return fmt.Sprintf("dockerd %s is not installed (%v); run scripts/deps-docker.sh", DockerVersion, err)
	}
	return ""
}

// DockerRuntime is one more runtime of the runtime under test in the private dockerd's
// daemon.json, with the options table an operator would write:
//
//	"runtimes": {"<Name>": {"runtimeType": "io.example.v2", "options": {<Options>}}}
//
// dockerd turns the options of a runtime type other than runc's into containerd's
// runtimeoptions.v1.Options (field names matched case-insensitively: "ConfigPath"), which
// reaches the shim as its task options.
type DockerRuntime struct {
	Name    string
	Options map[string]any
}

// Docker is a private dockerd started by the harness on a harness containerd.
type Docker struct {
	Containerd   *Daemon // the containerd it runs containers through
	Dir          string  // private directory holding everything below
	DataRoot     string  // --data-root
	ExecRoot     string  // --exec-root
	Socket       string  // API socket path
	Host         string  // DOCKER_HOST value: unix://<Socket>
	ConfigPath   string  // daemon.json
	CLIConfigDir string  // DOCKER_CONFIG given to the CLI
	LogPath      string  // dockerd's stdout and stderr
	PidFile      string  // --pidfile
	Namespace    string  // containerd namespace of its containers (--containerd-namespace)
	CgroupParent string  // cgroup parent of its containers (--cgroup-parent): a slice under systemd
	CgroupDir    string  // CgroupParent's cgroup below the mount point (a slice's expanded)
	Dockerd      string  // dockerd binary
	CLI          string  // docker CLI binary

	cmd     *exec.Cmd
	exited  chan struct{}
	waitErr error
	logFile *os.File
	// madeRunDocker: /run/docker did not exist before this dockerd (see dockerPluginDir).
	madeRunDocker bool

	mu      sync.Mutex
	stopped bool
}

// StartDocker starts a private dockerd on d (see NewDocker) and registers its teardown with
// t.Cleanup, before d's own (cleanups run last-in first-out). A missing dockerd or CLI fails
// the test; callers skip beforehand with DockerMissing.
func StartDocker(t testing.TB, d *Daemon, extra ...DockerRuntime) *Docker {
	t.Helper()
	k, err := NewDocker(d, extra...)
	if err != nil {
		t.Fatalf("start dockerd: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("dockerd log (last 60 lines of %s):\n%s", k.LogPath, k.LogTail(60))
		}
		if err := k.Stop(); err != nil {
			t.Errorf("stop dockerd: %v", err)
		}
	})
	return k
}

// NewDocker starts a private dockerd whose containerd is d and waits until it answers; the
// caller must call Stop (before d's Stop). d should run a runc >= 1.2 (WithRunc(DockerRunc)).
// daemon.json registers DockerRuntimeName and the extra runtimes.
func NewDocker(d *Daemon, extra ...DockerRuntime) (_ *Docker, retErr error) {
	k := &Docker{
		Containerd: d,
		Dir:        filepath.Join(d.Base, "dk"),
		Namespace:  "dk-" + RandID(10),
		Dockerd:    DockerdPath(),
		CLI:        DockerCLIPath(),
	}
	if _, err := os.Stat(k.Dockerd); err != nil {
		return nil, fmt.Errorf("dockerd %s: %w (run scripts/deps-docker.sh)", DockerVersion, err)
	}
	if k.CLI == "" {
		return nil, errors.New("no docker CLI on PATH (run scripts/deps-docker.sh)")
	}
	k.CgroupParent, k.CgroupDir = "/"+k.Namespace, "/"+k.Namespace
	if DockerUsesSystemd() {
		// Its systemd driver takes only a slice: one at the top ("-" would nest it).
		k.CgroupParent = strings.ReplaceAll(k.Namespace, "-", "_") + ".slice"
		k.CgroupDir = "/" + k.CgroupParent
	}
	k.DataRoot = filepath.Join(k.Dir, "root")
	k.ExecRoot = filepath.Join(k.Dir, "x")
	k.Socket = filepath.Join(k.Dir, "docker.sock")
	k.Host = "unix://" + k.Socket
	k.ConfigPath = filepath.Join(k.Dir, "daemon.json")
	k.CLIConfigDir = filepath.Join(k.Dir, "cli")
	k.LogPath = filepath.Join(k.Dir, "dockerd.log")
	k.PidFile = filepath.Join(k.Dir, "dockerd.pid")
	// Before anything can go wrong: containerd's Stop then cleans the namespace and the
	// cgroup parent, whatever state dockerd left them in.
	d.TrackNamespace(k.Namespace)
	defer func() {
		if retErr != nil {
			if k.cmd != nil {
				if tail := k.LogTail(40); tail != "" {
					retErr = fmt.Errorf("%w\ndockerd log tail:\n%s", retErr, tail)
				}
			}
			_ = k.Stop()
		}
	}()
	for _, dir := range []string{k.DataRoot, k.ExecRoot, k.CLIConfigDir} {
		if err := os.MkdirAll(dir, 0o711); err != nil {
			return nil, err
		}
	}
	if _, err := os.Stat(filepath.Dir(dockerPluginDir)); os.IsNotExist(err) {
		k.madeRunDocker = true
	}
	runtimes := map[string]any{DockerRuntimeName: map[string]any{"runtimeType": Runtime()}}
	for _, r := range extra {
		runtimes[r.Name] = map[string]any{"runtimeType": Runtime(), "options": r.Options}
	}
	// live-restore: containers outlive a dockerd restart (Restart), as production daemons
	// are often set up; Stop removes them before it stops dockerd all the same.
	cfg, err := json.MarshalIndent(map[string]any{"runtimes": runtimes, "live-restore": true, "debug": true}, "", "  ")
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(k.ConfigPath, append(cfg, '\n'), 0o600); err != nil {
		return nil, err
	}
	k.logFile, err = os.OpenFile(k.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}

	if err := k.start(); err != nil {
		return nil, err
	}
	return k, nil
}

// start starts the dockerd process and waits until it answers.
func (k *Docker) start() error {
	cmd := exec.Command(k.Dockerd,
		"--config-file", k.ConfigPath,
		"--containerd", k.Containerd.Address,
		"--containerd-namespace", k.Namespace,
		"--containerd-plugins-namespace", k.Namespace+"-plugins",
		"--data-root", k.DataRoot,
		"--exec-root", k.ExecRoot,
		"--pidfile", k.PidFile,
		"--host", k.Host,
		"--cgroup-parent", k.CgroupParent,
		"--shutdown-timeout", fmt.Sprint(dockerShutdownTimeout),
		// No networking beyond --network none: no bridge, no iptables rules, no proxies.
		"--iptables=false", "--ip6tables=false", "--bridge=none", "--userland-proxy=false",
	)
	cmd.Dir = k.Dir
	cmd.Stdout = k.logFile
	cmd.Stderr = k.logFile
	// containerd's PATH, so that `docker info` reports the runc the shims run.
	cmd.Env = append(filteredEnv("PATH", "DOCKER_HOST", "DOCKER_CONFIG", "NOTIFY_SOCKET", "CONTAINERD_ADDRESS", "CONTAINERD_NAMESPACE"), "PATH="+k.Containerd.PATH)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	exited := make(chan struct{})
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", k.Dockerd, err)
	}
	k.cmd, k.exited = cmd, exited
	go func() {
		k.waitErr = cmd.Wait()
		close(exited)
	}()
	return k.waitServing()
}

// Restart stops the dockerd process alone, by its PID (SIGTERM, SIGKILL after
// DockerStopTimeout), and starts it again with the same configuration. daemon.json sets
// live-restore, so the containers keep running under their shims meanwhile and the new
// dockerd takes them over, as after an upgrade of a host's Docker.
func (k *Docker) Restart() error {
	k.mu.Lock()
	stopped := k.stopped
	k.mu.Unlock()
	if stopped {
		return errors.New("dockerd was torn down by Stop")
	}
	err := k.stopProcess()
	return errors.Join(err, k.start())
}

// stopProcess ends the dockerd process by its PID: SIGTERM, SIGKILL after
// DockerStopTimeout (reported as an error).
func (k *Docker) stopProcess() error {
	if k.cmd == nil || k.Exited() {
		return nil
	}
	_ = k.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-k.exited:
		return nil
	case <-time.After(DockerStopTimeout):
	}
	_ = k.cmd.Process.Kill()
	<-k.exited
	return fmt.Errorf("dockerd (pid %d) did not stop on SIGTERM within %v; killed", k.Pid(), DockerStopTimeout)
}

// waitServing polls dockerd's /_ping until it answers OK.
func (k *Docker) waitServing() error {
	client := &http.Client{
		Timeout: 2 * time.Second,
		Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var dl net.Dialer
			return dl.DialContext(ctx, "unix", k.Socket)
		}},
	}
	defer client.CloseIdleConnections()
	deadline := time.Now().Add(DockerStartTimeout)
	for {
		select {
		case <-k.exited:
			return fmt.Errorf("dockerd exited during startup: %v", k.waitErr)
		default:
		}
		if resp, err := client.Get("http://docker/_ping"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("dockerd did not answer on %s within %v", k.Socket, DockerStartTimeout)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Pid is dockerd's process id.
func (k *Docker) Pid() int {
	if k.cmd == nil || k.cmd.Process == nil {
		return 0
	}
	return k.cmd.Process.Pid
}

// Exited reports whether dockerd has exited.
func (k *Docker) Exited() bool {
	select {
	case <-k.exited:
		return true
	default:
		return false
	}
}

// LogTail returns the last n lines of dockerd's log.
func (k *Docker) LogTail(n int) string {
	data, err := os.ReadFile(k.LogPath)
	if err != nil {
		return ""
	}
	if len(data) > 256<<10 {
		data = data[len(data)-256<<10:]
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// Cmd builds (does not start) a command running the docker CLI against this dockerd
// (DOCKER_HOST, a private DOCKER_CONFIG). It is killed when ctx ends.
func (k *Docker) Cmd(ctx context.Context, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, k.CLI, args...)
	cmd.Env = append(filteredEnv("DOCKER_HOST", "DOCKER_CONTEXT", "DOCKER_CONFIG", "DOCKER_TLS", "DOCKER_TLS_VERIFY", "DOCKER_CERT_PATH"),
		"DOCKER_HOST="+k.Host, "DOCKER_CONFIG="+k.CLIConfigDir)
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

// Run runs the docker CLI (see Cmd) and returns its stdout, stderr and exit code (see
// RunCmd).
func (k *Docker) Run(ctx context.Context, args ...string) (stdout, stderr string, code int, err error) {
	return RunCmd(ctx, k.Cmd(ctx, args...))
}

// LoadTestImage loads the test image (ImageArchive) with `docker load` and returns its
// name, ImageName (the archive's io.containerd.image.name annotation names it; an image
// loaded under another name is tagged so).
func (k *Docker) LoadTestImage(ctx context.Context) (string, error) {
	archive, err := ImageArchive()
	if err != nil {
		return "", err
	}
	out, errOut, code, err := k.Run(ctx, "load", "-i", archive)
	if err != nil || code != 0 {
		return "", fmt.Errorf("docker load -i %s: exit %d, %v: %s%s", archive, code, err, out, errOut)
	}
	var loaded string
	for _, l := range strings.Split(out, "\n") {
		if v, ok := strings.CutPrefix(l, "Loaded image: "); ok {
			loaded = strings.TrimSpace(v)
		} else if v, ok := strings.CutPrefix(l, "Loaded image ID: "); ok && loaded == "" {
			loaded = strings.TrimSpace(v)
		}
	}
	if loaded == "" {
		return "", fmt.Errorf("docker load -i %s named no image: %s", archive, out)
	}
	if loaded != ImageName {
		if out, errOut, code, err := k.Run(ctx, "tag", loaded, ImageName); err != nil || code != 0 {
			return "", fmt.Errorf("docker tag %s %s: exit %d, %v: %s%s", loaded, ImageName, code, err, out, errOut)
		}
	}
	return ImageName, nil
}

// Containers lists the IDs of all of dockerd's containers (`docker ps -aq --no-trunc`).
func (k *Docker) Containers(ctx context.Context) ([]string, error) {
	out, errOut, code, err := k.Run(ctx, "ps", "-aq", "--no-trunc")
	if err != nil || code != 0 {
		return nil, fmt.Errorf("docker ps -aq: exit %d, %v: %s", code, err, errOut)
	}
	return strings.Fields(out), nil
}

// Leftovers describes what is left of dockerd's containers once they should all be gone:
// everything containerd's Leftovers finds in Namespace (shim processes, mounts, runc state,
// bundles) plus, for each of ids, its shim socket, runc state and bundle; mounts under
// dockerd's roots other than the data root's own bind mount (container rootfs, netns
// files); cgroups below CgroupParent in any hierarchy. An empty result means nothing leaked.
func (k *Docker) Leftovers(ids ...string) []string {
	d := k.Containerd
	out := d.Leftovers(k.Namespace, "")
	for _, id := range ids {
		for _, l := range d.Leftovers(k.Namespace, id) {
			if strings.HasPrefix(l, "path ") {
				out = append(out, l)
			}
		}
	}
	for _, m := range MountsUnder(k.Dir) {
		if m.Point != k.DataRoot {
			out = append(out, fmt.Sprintf("mount %s (%s)", m.Point, m.FSType))
		}
	}
	for _, h := range CgroupHierarchies() {
		entries, _ := os.ReadDir(filepath.Join(h, k.CgroupDir))
		for _, e := range entries {
			if e.IsDir() {
				out = append(out, "cgroup "+filepath.Join(h, k.CgroupDir, e.Name()))
			}
		}
	}
	return out
}

// WaitNoLeftovers polls Leftovers until it is empty or timeout passes (shims exit shortly
// after their task is deleted) and returns the last non-empty result.
func (k *Docker) WaitNoLeftovers(timeout time.Duration, ids ...string) []string {
	return pollUntilEmpty(timeout, func() []string { return k.Leftovers(ids...) })
}

// Stop tears dockerd down; it is idempotent and does as much as it can even after errors:
// removes every container (`docker rm -f`), stops dockerd by PID (SIGTERM, SIGKILL after
// DockerStopTimeout), unmounts what is left under its directory deepest first, removes
// the directory, and the host-wide plugin directory when dockerd created it. Tasks,
// runc state and the cgroup parent that a killed dockerd left in containerd are the
// containerd Daemon's to clean (Stop there; the namespace is tracked).
func (k *Docker) Stop() error {
	k.mu.Lock()
	if k.stopped {
		k.mu.Unlock()
		return nil
	}
	k.stopped = true
	k.mu.Unlock()

	var errs []error
	if k.cmd != nil && !k.Exited() {
		ctx, cancel := context.WithTimeout(context.Background(), DockerCallTimeout)
		ids, err := k.Containers(ctx)
		if err != nil {
			errs = append(errs, err)
		}
		if len(ids) > 0 {
			args := append([]string{"rm", "-f", "-v"}, ids...)
			if _, errOut, code, err := k.Run(ctx, args...); err != nil || code != 0 {
				errs = append(errs, fmt.Errorf("docker rm -f: exit %d, %v: %s", code, err, errOut))
			}
		}
		cancel()
	}
	if err := k.stopProcess(); err != nil {
		errs = append(errs, err)
	}
	if strings.HasSuffix(k.CgroupParent, ".slice") {
		// systemd made the slice for the first container's scope; it outlives them.
		if out, err := Systemctl("stop", k.CgroupParent); err != nil {
			errs = append(errs, fmt.Errorf("systemctl stop %s: %v: %s", k.CgroupParent, err, out))
		}
	}
	if err := UnmountUnder(k.Dir); err != nil {
		errs = append(errs, err)
	}
	if err := os.RemoveAll(k.Dir); err != nil {
		errs = append(errs, err)
	}
	if k.madeRunDocker {
		// Only while empty: another dockerd may have started meanwhile and use them.
		_ = os.Remove(dockerPluginDir)
		_ = os.Remove(filepath.Dir(dockerPluginDir))
	}
	if k.logFile != nil {
		k.logFile.Close()
	}
	return errors.Join(errs...)
}
