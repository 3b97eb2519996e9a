package integration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/example/containerd-shim-example-v2/integration/harness"
)

// criPod is a pod sandbox made through CRI, with what its containers need to be created.
type criPod struct {
	id     string
	config *runtimeapi.PodSandboxConfig
	logDir string
}

// runCRIPod runs a host-network pod sandbox with the runtime handler of the shim under test,
// as kubelet does (log directory, cgroup parent, per-container PID namespaces).
func runCRIPod(t *testing.T, ctx context.Context, d *harness.Daemon, cri *harness.CRI, name string) *criPod {
	t.Helper()
	p, err := runCRIPodWithHandler(ctx, d, cri, name, harness.CRIRuntimeHandler)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// runCRIPodWithHandler is runCRIPod for any runtime handler of the daemon, returning
// RunPodSandbox's error.
func runCRIPodWithHandler(ctx context.Context, d *harness.Daemon, cri *harness.CRI, name, handler string) (*criPod, error) {
	return runCRIPodIn(ctx, d, cri, name, handler, cri.NewCgroupParent())
}

// runCRIPodIn is runCRIPodWithHandler with a given pod cgroup parent (kubelet's pod cgroup).
func runCRIPodIn(ctx context.Context, d *harness.Daemon, cri *harness.CRI, name, handler, parent string) (*criPod, error) {
	uid := harness.RandID(12)
	p := &criPod{logDir: filepath.Join(d.PodLogRoot(), uid)}
	p.config = &runtimeapi.PodSandboxConfig{
		Metadata:     &runtimeapi.PodSandboxMetadata{Name: name, Uid: uid, Namespace: "default"},
		LogDirectory: p.logDir,
		Linux: &runtimeapi.LinuxPodSandboxConfig{
			CgroupParent: parent,
			SecurityContext: &runtimeapi.LinuxSandboxSecurityContext{
				NamespaceOptions: &runtimeapi.NamespaceOption{
					Network: runtimeapi.NamespaceMode_NODE,
					Pid:     runtimeapi.NamespaceMode_CONTAINER,
					Ipc:     runtimeapi.NamespaceMode_POD,
				},
			},
		},
	}
	r, err := cri.Runtime.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: p.config, RuntimeHandler: handler})
	if err != nil {
		return nil, fmt.Errorf("RunPodSandbox (handler %s): %w", handler, err)
	}
	p.id = r.PodSandboxId
	return p, nil
}

// createCRIContainer creates (does not start) a container of the test image in the pod.
func createCRIContainer(t *testing.T, ctx context.Context, cri *harness.CRI, p *criPod, name string, args []string, edit func(*runtimeapi.ContainerConfig)) string {
	t.Helper()
	cfg := &runtimeapi.ContainerConfig{
		Metadata: &runtimeapi.ContainerMetadata{Name: name},
		Image:    &runtimeapi.ImageSpec{Image: harness.ImageName},
		Command:  args[:1],
		Args:     args[1:],
		LogPath:  name + "_0.log",
		Linux:    &runtimeapi.LinuxContainerConfig{Resources: &runtimeapi.LinuxContainerResources{}},
	}
	if edit != nil {
		edit(cfg)
	}
	r, err := cri.Runtime.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: p.id, Config: cfg, SandboxConfig: p.config})
	if err != nil {
		t.Fatalf("CreateContainer %s: %v", name, err)
	}
	return r.ContainerId
}

func startCRIContainer(t *testing.T, ctx context.Context, cri *harness.CRI, id, name string) {
	t.Helper()
	if _, err := cri.Runtime.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: id}); err != nil {
		t.Fatalf("StartContainer %s: %v", name, err)
	}
}

// waitCRIState polls ContainerStatus until the container is in state.
func waitCRIState(t *testing.T, ctx context.Context, cri *harness.CRI, id, name string, state runtimeapi.ContainerState, timeout time.Duration) *runtimeapi.ContainerStatus {
	t.Helper()
	st, err := cri.WaitContainerState(ctx, id, state, timeout)
	if err != nil {
		t.Fatalf("container %s: %v", name, err)
	}
	return st
}

// runCRIAppToExit creates and starts an app container running `sh -c script` in the pod,
// waits for it to exit, and checks its exit code and its CRI log ("stream content" lines).
func runCRIAppToExit(t *testing.T, ctx context.Context, cri *harness.CRI, pod *criPod, name, script string, wantCode int32, wantLog []string) string {
	t.Helper()
	id := createCRIContainer(t, ctx, cri, pod, name, []string{"sh", "-c", script}, nil)
	startCRIContainer(t, ctx, cri, id, name)
	st := waitCRIState(t, ctx, cri, id, name, runtimeapi.ContainerState_CONTAINER_EXITED, 10*time.Second)
	if st.ExitCode != wantCode {
		t.Errorf("%s: exit code %d, want %d", name, st.ExitCode, wantCode)
	}
	if got := readCRILog(t, filepath.Join(pod.logDir, name+"_0.log")); !slices.Equal(got, wantLog) {
		t.Errorf("%s: CRI log %q, want %q", name, got, wantLog)
	}
	return id
}

// criLogRecord is a line of kubelet's log format as the CRI plugin writes it.
var criLogRecord = regexp.MustCompile(`^\S+ (stdout|stderr) ([FP]) (.*)$`)

// readCRILog returns "stream content" for every full record of a CRI container log.
func readCRILog(t *testing.T, path string) []string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("container log: %v", err)
	}
	var out []string
	for _, line := range strings.Split(strings.TrimSuffix(string(data), "\n"), "\n") {
		m := criLogRecord.FindStringSubmatch(line)
		if m == nil {
			t.Errorf("%s: not a CRI log record: %q", path, line)
			continue
		}
		out = append(out, m[1]+" "+m[3])
	}
	return out
}

// processesIn lists processes with exactly these args whose cgroup path names container id.
func processesIn(id string, args ...string) []harness.Proc {
	var out []harness.Proc
	for _, p := range harness.Processes(func(a []string) bool { return slices.Equal(a, args) }) {
		cg, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", p.Pid))
		if strings.Contains(string(cg), id) {
			out = append(out, p)
		}
	}
	return out
}

// CRI: containerd's CRI plugin drives the shim the way kubelet does, through a runtime
// handler whose runtime_type is the shim under test: a host-network pod (pause + app
// containers, all in ONE shim process with identical address files), exit codes and the
// kubelet-format log of an exited container, ExecSync with exit code and output, ExecSync of a
// missing binary, ExecSync whose timeout kills the exec, exec and attach over the streaming server, stats, an
// OOM-killed container reported as OOMKilled, StopContainer whose grace period ends in
// SIGKILL (137), RemoveContainer, StopPodSandbox and RemovePodSandbox, after which the shim
// exits and nothing is left. Each flavor gets a CRI daemon of its own.
func TestCRIPodLifecycle(t *testing.T) {
	for _, flavor := range harness.AllFlavors {
		t.Run("containerd-"+flavor, func(t *testing.T) {
			d, cri := harness.StartCRIDaemon(t, flavor)
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()

			v, err := cri.Runtime.Version(ctx, &runtimeapi.VersionRequest{})
			if err != nil {
				t.Fatalf("Version: %v", err)
			}
			t.Logf("CRI runtime %s %s (API %s)", v.RuntimeName, v.RuntimeVersion, v.RuntimeApiVersion)

			pod := runCRIPod(t, ctx, d, cri, "pod-"+harness.RandID(6))
			ps, err := cri.Runtime.PodSandboxStatus(ctx, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: pod.id})
			if err != nil || ps.Status.State != runtimeapi.PodSandboxState_SANDBOX_READY {
				t.Fatalf("PodSandboxStatus: %v %v, want SANDBOX_READY", ps.GetStatus().GetState(), err)
			}
			shims := d.ShimProcesses(harness.CRINamespace, "")
			if len(shims) != 1 {
				t.Fatalf("shim processes after RunPodSandbox: %v, want one", shims)
			}
			podShim := shims[0]
			podSocket := socketOf(t, readAddressFile(t, d, harness.CRINamespace, pod.id))
			if bin := filepath.Base(podShim.Args[0]); bin != harness.RuntimeBinaryName(harness.Runtime()) {
				t.Fatalf("the pod's shim is %s, not the runtime under test %s", bin, harness.Runtime())
			}

			// A long runner: ignores SIGTERM, echoes its stdin (for attach).
			const runnerName = "runner"
			runner := createCRIContainer(t, ctx, cri, pod, runnerName, []string{"sh", "-c",
				`trap "" TERM; echo started; while read l; do echo "got:$l"; done; while :; do sleep 0.2; done`},
				func(c *runtimeapi.ContainerConfig) { c.Stdin = true })
			startCRIContainer(t, ctx, cri, runner, runnerName)
			waitCRIState(t, ctx, cri, runner, runnerName, runtimeapi.ContainerState_CONTAINER_RUNNING, 10*time.Second)

			// A second app container that exits with 3 after writing both streams.
			const echoName = "echo"
			echo := createCRIContainer(t, ctx, cri, pod, echoName, []string{"sh", "-c", "echo hello; sleep 0.5; echo oops >&2; exit 3"}, nil)
			startCRIContainer(t, ctx, cri, echo, echoName)

			t.Run("one-shim-per-pod", func(t *testing.T) {
				running := []string{pod.id, runner}
				if st, _ := cri.Runtime.ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{ContainerId: echo}); st.GetStatus().GetState() == runtimeapi.ContainerState_CONTAINER_RUNNING {
					running = append(running, echo)
				}
				if p := d.ShimProcesses(harness.CRINamespace, ""); len(p) != 1 || p[0].Pid != podShim.Pid {
					t.Errorf("shim processes with pause + %d app containers running: %v, want only the pod's %d", len(running)-1, p, podShim.Pid)
				}
				want := readAddressFile(t, d, harness.CRINamespace, pod.id)
				for _, id := range running[1:] {
					if got := readAddressFile(t, d, harness.CRINamespace, id); got != want {
						t.Errorf("address file of container %s is %q, the pause container's is %q", id, got, want)
					}
				}
			})

			t.Run("exit-code-and-log", func(t *testing.T) {
				st := waitCRIState(t, ctx, cri, echo, echoName, runtimeapi.ContainerState_CONTAINER_EXITED, 15*time.Second)
				if st.ExitCode != 3 || st.Reason != "Error" {
					t.Errorf("ContainerStatus of %s: exit code %d reason %q, want 3 and Error", echoName, st.ExitCode, st.Reason)
				}
				if st.LogPath != filepath.Join(pod.logDir, echoName+"_0.log") {
					t.Errorf("ContainerStatus log path %q, want %q", st.LogPath, filepath.Join(pod.logDir, echoName+"_0.log"))
				}
				if got, want := readCRILog(t, st.LogPath), []string{"stdout hello", "stderr oops"}; !slices.Equal(got, want) {
					t.Errorf("CRI log of %s: %q, want %q", echoName, got, want)
				}
				// The exited container's task was deleted by CRI: the pod's shim must stay.
				if !harness.PidExists(podShim.Pid) {
					t.Fatalf("the pod's shim %d exited with an app container", podShim.Pid)
				}
			})

			t.Run("exec-sync", func(t *testing.T) {
				r, err := cri.Runtime.ExecSync(ctx, &runtimeapi.ExecSyncRequest{ContainerId: runner,
					Cmd: []string{"sh", "-c", "echo out; echo err >&2; exit 7"}, Timeout: 10})
				if err != nil {
					t.Fatalf("ExecSync: %v", err)
				}
				if r.ExitCode != 7 || string(r.Stdout) != "out\n" || string(r.Stderr) != "err\n" {
					t.Errorf("ExecSync: exit %d stdout %q stderr %q, want 7 %q %q", r.ExitCode, r.Stdout, r.Stderr, "out\n", "err\n")
				}
			})

			t.Run("exec-sync-missing-binary", func(t *testing.T) {
				// The exec's Start fails; CRI then kills and deletes it
				// (WithProcessKill waits for the exec's Wait): an error,
				// promptly, and the container runs on.
				start := time.Now()
				_, err := cri.Runtime.ExecSync(ctx, &runtimeapi.ExecSyncRequest{ContainerId: runner, Cmd: []string{"/no/such/binary"}, Timeout: 10})
				if took := time.Since(start); took > 5*time.Second {
					t.Errorf("ExecSync of a missing binary returned after %v", took)
				}
				if err == nil || !strings.Contains(strings.ToLower(err.Error()), "no such file") {
					t.Errorf("ExecSync of a missing binary: %v, want an error naming the missing file", err)
				}
				r, err := cri.Runtime.ExecSync(ctx, &runtimeapi.ExecSyncRequest{ContainerId: runner, Cmd: []string{"true"}, Timeout: 10})
				if err != nil || r.ExitCode != 0 {
					t.Errorf("ExecSync after the failed one: %v, exit %d", err, r.GetExitCode())
				}
			})

			t.Run("exec-sync-timeout", func(t *testing.T) {
				seen := make(chan bool, 1)
				go func() {
					found := false
					for end := time.Now().Add(5 * time.Second); time.Now().Before(end) && !found; time.Sleep(20 * time.Millisecond) {
						found = len(processesIn(runner, "sleep", "101")) > 0
					}
					seen <- found
				}()
				start := time.Now()
				r, err := cri.Runtime.ExecSync(ctx, &runtimeapi.ExecSyncRequest{ContainerId: runner, Cmd: []string{"sleep", "101"}, Timeout: 2})
				took := time.Since(start)
				if err == nil {
					t.Logf("ExecSync with timeout returned exit code %d (no error)", r.ExitCode)
				} else if !strings.Contains(err.Error(), "timeout") && !strings.Contains(err.Error(), "deadline") {
					t.Errorf("ExecSync with timeout: %v, want a timeout error", err)
				}
				if took < 2*time.Second || took > 8*time.Second {
					t.Errorf("ExecSync with a 2 s timeout returned after %v", took)
				}
				if !<-seen {
					t.Errorf("the exec's sleep process was never seen in the container: the check below would be vacuous")
				}
				waitFor(t, 5*time.Second, "the timed-out exec's sleep process is gone", func() bool {
					return len(processesIn(runner, "sleep", "101")) == 0
				})
			})

			t.Run("exec-stream", func(t *testing.T) {
				r, err := cri.Runtime.Exec(ctx, &runtimeapi.ExecRequest{ContainerId: runner,
					Cmd: []string{"sh", "-c", "echo s-out; echo s-err >&2; exit 3"}, Stdout: true, Stderr: true})
				if err != nil {
					t.Fatalf("Exec: %v", err)
				}
				sctx, scancel := context.WithTimeout(ctx, 15*time.Second)
				defer scancel()
				res, err := harness.ExecStream(sctx, r.Url)
				if err != nil {
					t.Fatalf("exec over the streaming server %s: %v", r.Url, err)
				}
				if res.Stdout != "s-out\n" || res.Stderr != "s-err\n" || res.ExitCode != 3 {
					t.Errorf("streamed exec: stdout %q stderr %q exit %d (status %s), want %q %q 3", res.Stdout, res.Stderr, res.ExitCode, res.Status, "s-out\n", "s-err\n")
				}
			})

			t.Run("attach-stream", func(t *testing.T) {
				r, err := cri.Runtime.Attach(ctx, &runtimeapi.AttachRequest{ContainerId: runner, Stdin: true, Stdout: true})
				if err != nil {
					t.Fatalf("Attach: %v", err)
				}
				sctx, scancel := context.WithTimeout(ctx, 15*time.Second)
				defer scancel()
				s, err := harness.DialStream(sctx, r.Url)
				if err != nil {
					t.Fatalf("attach over the streaming server: %v", err)
				}
				defer s.Close()
				// containerd's CRI starts copying an attach's stdin before it
				// adds the attach's stdout to the container's output
				// (ContainerIO.Attach, read in the 1.7 and 2.4 source): an
				// echo that comes back
				// fast enough goes to the log only. The line is sent again
				// until an echo reaches the attach, as a user would type it
				// again; the log check in stop-grace-period wants the echo.
				type message struct {
					ch   byte
					data []byte
					err  error
				}
				msgs := make(chan message)
				done := make(chan struct{})
				defer close(done) // before s.Close, which ends the reader
				go func() {
					for {
						ch, data, err := s.Next()
						select {
						case msgs <- message{ch, data, err}:
						case <-done:
							return
						}
						if err != nil {
							return
						}
					}
				}()
				var out strings.Builder
				resend := time.NewTicker(time.Second)
				defer resend.Stop()
				for send := true; !strings.Contains(out.String(), "got:ping\n"); {
					if send {
						if err := s.Send(0, []byte("ping\n")); err != nil {
							t.Fatalf("attach: send stdin: %v", err)
						}
						send = false
					}
					select {
					case m := <-msgs:
						if m.err != nil {
							t.Fatalf("attach: no echo of stdin (stdout so far %q): %v", out.String(), m.err)
						}
						if m.ch == 1 {
							out.Write(m.data)
						}
					case <-resend.C:
						send = true
					}
				}
			})

			t.Run("stats", func(t *testing.T) {
				r, err := cri.Runtime.ContainerStats(ctx, &runtimeapi.ContainerStatsRequest{ContainerId: runner})
				if err != nil {
					t.Fatalf("ContainerStats: %v", err)
				}
				m := r.GetStats().GetMemory()
				if m.GetWorkingSetBytes().GetValue() == 0 && m.GetUsageBytes().GetValue() == 0 {
					t.Errorf("ContainerStats of a running container: memory %v, want non-zero usage", m)
				}
				if r.GetStats().GetCpu() == nil {
					t.Errorf("ContainerStats: no CPU stats")
				}
				// containerd 2.3+ hands the shim's v2 PSI figures on to kubelet.
				_, psiErr := os.Stat("/proc/pressure/cpu")
				if cgroupV2() && psiErr == nil && harness.FlavorAtLeast(flavor, "2.3") {
					st := r.GetStats()
					for what, psi := range map[string]*runtimeapi.PsiStats{"cpu": st.GetCpu().GetPsi(), "memory": st.GetMemory().GetPsi(), "io": st.GetIo().GetPsi()} {
						if psi.GetSome() == nil || psi.GetFull() == nil {
							t.Errorf("ContainerStats: %s PSI %v, want some and full", what, psi)
						}
					}
				}
			})

			t.Run("oom-killed", func(t *testing.T) {
				const name = "oom"
				id := createCRIContainer(t, ctx, cri, pod, name, []string{"sh", "-c", `a=x; while :; do a="$a$a"; done`},
					func(c *runtimeapi.ContainerConfig) { c.Linux.Resources.MemoryLimitInBytes = 32 << 20 })
				startCRIContainer(t, ctx, cri, id, name)
				st := waitCRIState(t, ctx, cri, id, name, runtimeapi.ContainerState_CONTAINER_EXITED, 30*time.Second)
				if st.ExitCode != 137 || st.Reason != "OOMKilled" {
					t.Errorf("container over its 32 MiB limit: exit code %d reason %q, want 137 and OOMKilled", st.ExitCode, st.Reason)
				}
			})

			t.Run("stop-grace-period", func(t *testing.T) {
				start := time.Now()
				if _, err := cri.Runtime.StopContainer(ctx, &runtimeapi.StopContainerRequest{ContainerId: runner, Timeout: 2}); err != nil {
					t.Fatalf("StopContainer: %v", err)
				}
				took := time.Since(start)
				if took < 2*time.Second || took > 8*time.Second {
					t.Errorf("StopContainer with a 2 s grace period on a SIGTERM-ignoring container took %v", took)
				}
				st := waitCRIState(t, ctx, cri, runner, runnerName, runtimeapi.ContainerState_CONTAINER_EXITED, 5*time.Second)
				if st.ExitCode != 137 {
					t.Errorf("exit code after the grace period %d, want 137 (SIGKILL)", st.ExitCode)
				}
				log := readCRILog(t, st.LogPath)
				if !slices.Contains(log, "stdout started") || !slices.Contains(log, "stdout got:ping") {
					t.Errorf("CRI log of %s: %q, want its output and the attached input's echo", runnerName, log)
				}
			})

			// Teardown as kubelet does it; the pod's shim goes with the pod.
			ls, err := cri.Runtime.ListContainers(ctx, &runtimeapi.ListContainersRequest{Filter: &runtimeapi.ContainerFilter{PodSandboxId: pod.id}})
			if err != nil {
				t.Fatalf("ListContainers: %v", err)
			}
			ids := map[string]bool{pod.id: true}
			for _, c := range ls.Containers {
				ids[c.Id] = true
				if _, err := cri.Runtime.StopContainer(ctx, &runtimeapi.StopContainerRequest{ContainerId: c.Id, Timeout: 0}); err != nil {
					t.Errorf("StopContainer %s: %v", c.Metadata.Name, err)
				}
				if _, err := cri.Runtime.RemoveContainer(ctx, &runtimeapi.RemoveContainerRequest{ContainerId: c.Id}); err != nil {
					t.Errorf("RemoveContainer %s: %v", c.Metadata.Name, err)
				}
			}
			if !harness.PidExists(podShim.Pid) {
				t.Errorf("the pod's shim %d exited before the pod was stopped", podShim.Pid)
			}
			if _, err := cri.Runtime.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: pod.id}); err != nil {
				t.Fatalf("StopPodSandbox: %v", err)
			}
			if _, err := cri.Runtime.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: pod.id}); err != nil {
				t.Fatalf("RemovePodSandbox: %v", err)
			}
			waitFor(t, 5*time.Second, "the pod's shim exits after RemovePodSandbox", func() bool { return !harness.PidExists(podShim.Pid) })
			if _, err := os.Lstat(podSocket); !os.IsNotExist(err) {
				t.Errorf("the pod's shim socket %s is left after the shim exited (%v)", podSocket, err)
			}
			if left := d.WaitCRILeftovers(ids, harness.LeakTimeout); len(left) > 0 {
				t.Errorf("left after RemovePodSandbox: %s", strings.Join(left, "; "))
			}
		})
	}
}
