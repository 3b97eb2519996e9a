package integration

import (
	"context"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/example/containerd-shim-example-v2/integration/harness"
)

// What Docker users do to a running container's cgroup, through the shim: `docker top`
// (the task's Pids), `docker pause` and `unpause` (Pause and Resume, and the paused and
// resumed events dockerd keeps its state from), `docker update` (Update: the new limits
// land in the container's cgroup, read from inside it), and a container killed by the
// OOM killer for its memory limit, which dockerd reports as OOMKilled only from the
// shim's /tasks/oom event. It runs on this host (cgroup v1, Docker's default host cgroup
// namespace) and in the cgroup v2 lane (a private cgroup namespace), where these calls
// take another path through the runtime and the shim.
func TestDockerResources(t *testing.T) {
	if why := harness.DockerMissing(); why != "" {
		t.Skip(why)
	}
	e := startDockerEnv(t)
	t.Run("top-pause-update", e.testTopPauseUpdate)
	t.Run("oom-killed", e.testOOMKilled)
}

// cgroupFile is a shell expression for a file of the container's own cgroup, seen from
// inside it: at the root of /sys/fs/cgroup on v2, in the controller's directory on v1
// (runc mounts the container's part of each hierarchy there).
func cgroupFile(v2, v1 string) string {
	return "cat /sys/fs/cgroup/" + v2 + " 2>/dev/null || cat /sys/fs/cgroup/" + v1
}

func (e *dockerEnv) testTopPauseUpdate(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	id := e.dockerOK(t, ctx, e.runArgs(harness.Runtime(), "-d", "--memory", "64m", "--pids-limit", "50", e.image, "sleep", "1000")...)
	defer e.dockerOK(t, context.WithoutCancel(ctx), "rm", "-f", id)
	pid := e.inspectPid(t, ctx, id)
	e.expectCgroup(t, id, pid)

	// `docker top` lists the container's processes by host pid, from the shim's Pids.
	e.dockerOK(t, ctx, "exec", "-d", id, "sleep", "999")
	var top string
	if !eventually(10*time.Second, func() bool {
		top = e.dockerOK(t, ctx, "top", id, "-o", "pid,args")
		return strings.Contains(top, "sleep 999")
	}) || !topHasPid(top, pid) {
		t.Errorf("docker top: %q, want the init (pid %d, sleep 1000) and the exec (sleep 999)", top, pid)
	}

	e.dockerOK(t, ctx, "pause", id)
	if got := e.inspect(t, ctx, id, "{{.State.Status}} {{.State.Paused}}"); got != "paused true" {
		t.Errorf("after docker pause: %q, want \"paused true\"", got)
	}
	e.dockerOK(t, ctx, "unpause", id)
	if got := e.inspect(t, ctx, id, "{{.State.Status}} {{.State.Paused}}"); got != "running false" {
		t.Errorf("after docker unpause: %q, want \"running false\"", got)
	}
	if out := e.dockerOK(t, ctx, "exec", id, "echo", "alive"); out != "alive" {
		t.Errorf("docker exec after unpause: %q, want \"alive\"", out)
	}

	read := func(v2, v1 string) string {
		return e.dockerOK(t, ctx, "exec", id, "sh", "-c", cgroupFile(v2, v1))
	}
	if got := read("memory.max", "memory/memory.limit_in_bytes"); got != strconv.Itoa(64<<20) {
		t.Errorf("memory limit inside the container before docker update: %q, want %d", got, 64<<20)
	}
	e.dockerOK(t, ctx, "update", "--memory", "96m", "--memory-swap", "192m", "--pids-limit", "77", id)
	if got := read("memory.max", "memory/memory.limit_in_bytes"); got != strconv.Itoa(96<<20) {
		t.Errorf("memory limit inside the container after docker update --memory 96m: %q, want %d", got, 96<<20)
	}
	if got := read("pids.max", "pids/pids.max"); got != "77" {
		t.Errorf("pids limit inside the container after docker update --pids-limit 77: %q, want 77", got)
	}
	if got := e.inspect(t, ctx, id, "{{.HostConfig.Memory}} {{.HostConfig.PidsLimit}}"); got != strconv.Itoa(96<<20)+" 77" {
		t.Errorf("docker inspect after the update: %q, want %d 77", got, 96<<20)
	}
}

// expectCgroup checks that the container's init is in the cgroup dockerd's driver names:
// <parent>/<id> with cgroupfs; with systemd, the scope docker-<id>.scope in the parent
// slice, which runc makes only when the shim runs it with its systemd driver (dockerd
// passes no SystemdCgroup option to a runtime type other than runc's).
func (e *dockerEnv) expectCgroup(t *testing.T, id string, pid int) {
	t.Helper()
	want := filepath.Join(e.k.CgroupDir, id)
	if harness.DockerUsesSystemd() {
		want = filepath.Join(e.k.CgroupDir, "docker-"+id+".scope")
	}
	dir := filepath.Join(cgroupRoot, want)
	if !cgroupV2() {
		dir = filepath.Join(cgroupRoot, "memory", want)
	}
	if got := cgroupOf(t, uint32(pid)).dir("memory"); got != dir {
		t.Errorf("container %s: its init's cgroup is %s, want %s", id, got, dir)
	}
}

// topHasPid reports whether pid is in the first column of `docker top -o pid,args`.
func topHasPid(top string, pid int) bool {
	for _, line := range strings.Split(top, "\n") {
		if f := strings.Fields(line); len(f) > 0 && f[0] == strconv.Itoa(pid) {
			return true
		}
	}
	return false
}

// A container over its memory limit (no swap) is killed by the kernel; dockerd marks it
// OOMKilled only when the shim published /tasks/oom for it, and the exit code is 137.
func (e *dockerEnv) testOOMKilled(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	id := "oom-" + harness.RandID(8)
	_, errOut, code := e.docker(t, ctx, append(e.runArgs(harness.Runtime(), "--name", id, "--memory", "32m", "--memory-swap", "32m", e.image), memoryHogArgs...)...)
	defer e.dockerOK(t, context.WithoutCancel(ctx), "rm", "-f", id)
	if code != 137 {
		t.Errorf("docker run of a memory hog under 32 MiB: exit code %d (stderr %q), want 137", code, errOut)
	}
	if got := e.inspect(t, ctx, id, "{{.State.Status}} {{.State.ExitCode}} {{.State.OOMKilled}}"); got != "exited 137 true" {
		t.Errorf("docker inspect of the OOM-killed container: %q, want \"exited 137 true\"", got)
	}
}

// A container whose memory cgroup has the OOM killer disabled (`docker run
// --oom-kill-disable`, cgroup v1) and reaches its limit is not killed: its processes wait
// in the kernel for memory. The kernel still signals the cgroup's OOM notification, and the
// stock shim publishes /tasks/oom for it; dockerd turns that into an "oom" event (what
// `docker events` users and moby's TestEventsOOMDisableTrue wait for) and marks the
// container OOMKilled, while it goes on running.
func TestDockerOOMKillDisabled(t *testing.T) {
	if why := harness.DockerMissing(); why != "" {
		t.Skip(why)
	}
	if cgroupV2() {
		t.Skip("--oom-kill-disable is a cgroup v1 setting (dockerd ignores it on v2)")
	}
	e := startDockerEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	since := strconv.FormatInt(time.Now().Unix()-1, 10)
	id := e.dockerOK(t, ctx, append(e.runArgs(harness.Runtime(), "-d", "--oom-kill-disable", "--memory", "16m", "--memory-swap", "16m", e.image), memoryHogArgs...)...)
	defer e.dockerOK(t, context.WithoutCancel(ctx), "rm", "-f", id)
	var events, state string
	if !eventually(20*time.Second, func() bool {
		now := strconv.FormatInt(time.Now().Unix()+1, 10)
		events = e.dockerOK(t, ctx, "events", "--since", since, "--until", now, "--filter", "container="+id, "--format", "{{.Action}}")
		state = e.inspect(t, ctx, id, "{{.State.Status}} {{.State.OOMKilled}}")
		return strings.Contains(events, "oom") && state == "running true"
	}) {
		t.Errorf("container at its memory limit with the OOM killer disabled: events %q, status and OOMKilled %q; want an oom event, \"running true\"",
			strings.Fields(events), state)
	}
}
