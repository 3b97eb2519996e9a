package direct

import (
	"slices"
	"testing"
	"time"

	v1stats "github.com/containerd/cgroups/v3/cgroup1/stats"
	v2stats "github.com/containerd/cgroups/v3/cgroup2/stats"
	eventsapi "github.com/containerd/containerd/api/events"
	taskv3 "github.com/containerd/containerd/api/runtime/task/v3"
	runcopts "github.com/containerd/containerd/api/types/runc/options"
	tasktypes "github.com/containerd/containerd/api/types/task"
	"google.golang.org/protobuf/proto"
)

// memoryHogArgs allocate (a doubling shell string) until something stops them.
var memoryHogArgs = []string{"sh", "-c", `x=aaaaaaaa; while :; do x="$x$x"; done`}

// oomLimit is the memory limit of the OOM test: small, so the kill comes fast.
const oomLimit = 32 << 20

// Pids lists the init and a running exec by host PID; the exec carries its
// exec id in a containerd.runc.v1.ProcessDetails.
func TestPids(t *testing.T) {
	t.Parallel()
	env := NewEnv(t)
	c := env.Run(t, Config{Mode: Bootstrap, Name: "pids", Args: loopArgs, NullIO: true})
	ctx := TestContext(t, time.Minute)
	start(t, ctx, c, "")
	addExec(t, ctx, c, "side", loopArgs, nil)
	execPid := start(t, ctx, c, "side")
	resp, err := c.Task().Pids(ctx, &taskv3.PidsRequest{ID: c.ID})
	if err != nil {
		t.Fatalf("Pids: %v", err)
	}
	var pids []uint32
	for _, p := range resp.GetProcesses() {
		pids = append(pids, p.GetPid())
		switch p.GetPid() {
		case c.Pid:
			if p.GetInfo() != nil {
				t.Errorf("init %d carries info %v, want none", c.Pid, p.GetInfo())
			}
		case execPid:
			var d runcopts.ProcessDetails
			if p.GetInfo().GetTypeUrl() != "containerd.runc.v1.ProcessDetails" {
				t.Errorf("exec %d info type %q, want containerd.runc.v1.ProcessDetails", execPid, p.GetInfo().GetTypeUrl())
			} else if err := proto.Unmarshal(p.GetInfo().GetValue(), &d); err != nil || d.GetExecID() != "side" {
				t.Errorf("exec %d details %v (%v), want exec id side", execPid, &d, err)
			}
		}
	}
	if !slices.Contains(pids, c.Pid) || !slices.Contains(pids, execPid) {
		t.Errorf("Pids %v, want the init %d and the exec %d", pids, c.Pid, execPid)
	}
	kill(t, ctx, c, "side", sigKILL)
	wait(t, ctx, c, "side")
	deleteTask(t, ctx, c, "side")
	stop(t, ctx, c)
}

// Stats returns the cgroup metrics of the container: an Any of the cgroup
// v1 or v2 metrics type, with the memory and pids of the running container.
func TestStats(t *testing.T) {
	t.Parallel()
	env := NewEnv(t)
	c := env.Run(t, Config{Mode: Bootstrap, Name: "stats", Args: loopArgs, NullIO: true})
	ctx := TestContext(t, time.Minute)
	start(t, ctx, c, "")
	resp, err := c.Task().Stats(ctx, &taskv3.StatsRequest{ID: c.ID})
	if err != nil {
		t.Fatalf("Stats: %v", err)
	}
	a := resp.GetStats()
	if a == nil {
		t.Fatalf("Stats: no metrics")
	}
	switch a.GetTypeUrl() {
	case "io.containerd.cgroups.v1.Metrics":
		var m v1stats.Metrics
		if err := proto.Unmarshal(a.GetValue(), &m); err != nil {
			t.Fatalf("decode v1 metrics: %v", err)
		}
		if m.GetMemory().GetUsage().GetUsage() == 0 || m.GetPids().GetCurrent() < 1 {
			t.Errorf("v1 metrics: memory usage %d, pids %d; want both above zero", m.GetMemory().GetUsage().GetUsage(), m.GetPids().GetCurrent())
		}
	case "io.containerd.cgroups.v2.Metrics":
		var m v2stats.Metrics
		if err := proto.Unmarshal(a.GetValue(), &m); err != nil {
			t.Fatalf("decode v2 metrics: %v", err)
		}
		if m.GetMemory().GetUsage() == 0 || m.GetPids().GetCurrent() < 1 {
			t.Errorf("v2 metrics: memory usage %d, pids %d; want both above zero", m.GetMemory().GetUsage(), m.GetPids().GetCurrent())
		}
	default:
		t.Errorf("Stats type URL %q, want io.containerd.cgroups.v1.Metrics or .v2.Metrics", a.GetTypeUrl())
	}
	stop(t, ctx, c)
}

// Stats of a task whose cgroup the runtime has removed while the task lives
// on (a checkpoint that stopped the container; the systemd driver's scope,
// gone with its last process; here removed by hand once the init exited)
// answers NotFound, under cgroup v1 as under v2: containerd's metrics
// collection skips such a task quietly, and logs any other error at every
// poll until the task is deleted.
func TestStatsAfterTheCgroupIsRemoved(t *testing.T) {
	t.Parallel()
	env := NewEnv(t)
	c := env.Run(t, Config{Mode: Bootstrap, Name: "statsgone", Args: []string{"true"}, NullIO: true})
	ctx := TestContext(t, time.Minute)
	start(t, ctx, c, "")
	wait(t, ctx, c, "")
	if err := removeCgroupEventually(c.CgroupPath); err != nil {
		t.Fatalf("remove the exited container's cgroup: %v", err)
	}
	_, err := c.Task().Stats(ctx, &taskv3.StatsRequest{ID: c.ID})
	expectClass(t, "Stats of a task whose cgroup is gone", err, "NotFound")
	deleteTask(t, ctx, c, "")
}

// A container allocating past the memory limit of its spec is OOM-killed:
// exit 137, and /tasks/oom is forwarded before its /tasks/exit.
func TestOOM(t *testing.T) {
	t.Parallel()
	env := NewEnv(t)
	c := env.Run(t, Config{Mode: Bootstrap, Name: "oom", Args: memoryHogArgs, MemoryLimit: oomLimit, NullIO: true})
	ctx := TestContext(t, time.Minute)
	start(t, ctx, c, "")
	if got := wait(t, ctx, c, "").GetExitStatus(); got != 137 {
		t.Errorf("exit status %d, want 137 (SIGKILL by the OOM killer)", got)
	}
	exitEvent(t, c, c.ID)
	evs := c.Containerd.Events()
	oomAt, exitAt := -1, -1
	for i, e := range evs {
		switch x := e.Payload.(type) {
		case *eventsapi.TaskOOM:
			if oomAt < 0 {
				oomAt = i
			}
			if x.GetContainerID() != c.ID {
				t.Errorf("/tasks/oom for %q, want %q", x.GetContainerID(), c.ID)
			}
		case *eventsapi.TaskExit:
			if exitAt < 0 {
				exitAt = i
			}
			if x.GetExitStatus() != 137 {
				t.Errorf("/tasks/exit status %d, want 137", x.GetExitStatus())
			}
		}
	}
	if oomAt < 0 || oomAt > exitAt {
		t.Errorf("/tasks/oom at %d, /tasks/exit at %d: want the OOM first; events %s", oomAt, exitAt, describeEvents(evs))
	}
	deleteTask(t, ctx, c, "")
	CheckEnvelopes(t, c.Containerd.WaitTopic(t, WaitTimeout, topicDelete, 1), c.Namespace)
}

// A process of a running container, not its init, OOM-killed under the
// container's limit: /tasks/oom comes while the task runs on (under cgroup
// v1 through the notification, which precedes the kill's count, and the
// recheck that finds it counted).
func TestOOMOfAChild(t *testing.T) {
	t.Parallel()
	env := NewEnv(t)
	hog := memoryHogArgs[2]
	c := env.Run(t, Config{Mode: Bootstrap, Name: "oomchild", MemoryLimit: oomLimit, NullIO: true,
		Args: []string{"sh", "-c", "sh -c '" + hog + "'; exec sleep 600"}})
	ctx := TestContext(t, time.Minute)
	start(t, ctx, c, "")
	for _, e := range c.Containerd.WaitTopic(t, WaitTimeout, topicOOM, 1) {
		if x, ok := e.Payload.(*eventsapi.TaskOOM); ok && x.GetContainerID() != c.ID {
			t.Errorf("/tasks/oom for %q, want %q", x.GetContainerID(), c.ID)
		}
	}
	expectStatus(t, ctx, c, "", tasktypes.Status_RUNNING)
	stop(t, ctx, c)
}
