package integration

import (
	"context"
	"encoding/json"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/cio"

	"github.com/example/containerd-shim-example-v2/integration/harness"
)

// introspection is the JSON the shim's `introspect` action prints (protojson of
// proto/introspect/v1 SnapshotResponse: 64-bit numbers are strings).
type introspection struct {
	Pid       int    `json:"pid"`
	Namespace string `json:"namespace"`
	Events    struct {
		Pending   uint64 `json:"pending,string"`
		Forwarded uint64 `json:"forwarded,string"`
		Dropped   uint64 `json:"dropped,string"`
	} `json:"events"`
	Reaper struct {
		Watched int `json:"watched"`
	} `json:"reaper"`
	Version              string `json:"version"`
	CgroupWarmings       uint64 `json:"cgroupWarmings,string"`
	CgroupWarmingRunning bool   `json:"cgroupWarmingRunning"`
	Upgrade              struct {
		Count       int    `json:"count"`
		FromVersion string `json:"fromVersion"`
		PauseUs     uint64 `json:"pauseUs,string"`
		LastError   string `json:"lastError"`
	} `json:"upgrade"`
	Memory struct {
		RssKib     uint64 `json:"rssKib,string"`
		Goroutines int    `json:"goroutines"`
	} `json:"memory"`
	Tasks []struct {
		ID           string                `json:"id"`
		OomKills     uint64                `json:"oomKills,string"`
		LastOomScope string                `json:"lastOomScope"`
		Processes    []introspectedProcess `json:"processes"`
	} `json:"tasks"`
}

// introspectedProcess is one process in the shim's introspection.
type introspectedProcess struct {
	ExecID       string `json:"execId"`
	Pid          int    `json:"pid"`
	Status       string `json:"status"`
	ExitStatus   int    `json:"exitStatus"`
	OutputBytes  uint64 `json:"outputBytes,string"`
	DroppedBytes uint64 `json:"droppedBytes,string"`
	Queued       uint64 `json:"queuedBytes,string"`
	ClientQueued uint64 `json:"clientQueuedBytes,string"`
}

// introspect runs `<shim> -bundle <bundle> introspect` and decodes what it prints.
func introspect(t *testing.T, bundle string) introspection {
	t.Helper()
	out, err := exec.Command(harness.ShimUnderTest(), "-bundle", bundle, "introspect").Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		t.Fatalf("introspect %s: %v (%s)", bundle, err, stderr)
	}
	var s introspection
	if err := json.Unmarshal(out, &s); err != nil {
		t.Fatalf("introspect output is not the expected JSON: %v\n%s", err, out)
	}
	return s
}

// The introspection service, through the `introspect` action: the daemon's pid and
// namespace, every process of the task with its status and the exact number of output
// bytes it delivered, an exec's exit, the event queue drained with nothing dropped, and
// the daemon's memory. A bundle without a shim gives a clear error.
func TestIntrospection(t *testing.T) {
	if harness.Runtime() != "io.example.v2" {
		t.Skipf("introspection is a service of io.example.v2, not of %s", harness.Runtime())
	}
	forEachFlavor(t, func(t *testing.T, d *harness.Daemon) {
		ctx, ns := d.NewNamespace(t)
		ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		const id = "in1"
		const initBytes = 123457 // and a newline
		ctr := newContainer(t, ctx, d, id, []string{"sh", "-c", "head -c 123457 /dev/zero; echo; exec sleep 100000"})
		ioc, out, _ := bufferedIO(d)
		task, _ := startTask(t, ctx, ctr, ioc)
		defer task.Delete(context.WithoutCancel(ctx), containerd.WithProcessKill)
		if !eventually(10*time.Second, func() bool { return len(out.Bytes()) == initBytes+1 }) {
			// Where the bytes wait tells a slow client from a stuck relay.
			raw, _ := exec.Command(harness.ShimUnderTest(), "-bundle", d.BundleDir(ns, id), "introspect").Output()
			t.Fatalf("the init's output: %d of %d bytes within 10s; the shim says:\n%s", len(out.Bytes()), initBytes+1, raw)
		}

		// The daemon warms the kernel's cgroup migration lock ahead of the runtime's
		// create (at its start or at Create), and again at an Exec, ahead of the
		// Start that runs the runtime's exec (cgroup/warm.go).
		bundle := d.BundleDir(ns, id)
		var warmedBefore uint64
		waitFor(t, 10*time.Second, "a cgroup warming for the create, and none under way", func() bool {
			s := introspect(t, bundle)
			warmedBefore = s.CgroupWarmings
			return s.CgroupWarmings >= 1 && !s.CgroupWarmingRunning
		})

		var execOut lockedBuffer
		proc, err := task.Exec(ctx, "e1", execSpec(t, ctx, task, "sh", "-c", "echo exec-out; exec sleep 100000"),
			cio.NewCreator(cio.WithStreams(nil, &execOut, nil), cio.WithFIFODir(d.FIFODir)))
		if err != nil {
			t.Fatal(err)
		}
		execStatus, err := proc.Wait(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := proc.Start(ctx); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 10*time.Second, "the exec's output", func() bool { return execOut.String() == "exec-out\n" })
		waitFor(t, 10*time.Second, "a cgroup warming for the exec", func() bool {
			return introspect(t, bundle).CgroupWarmings > warmedBefore
		})

		s := introspect(t, bundle)
		shim := onlyShim(t, d, ns, id)
		if s.Pid != shim.Pid || s.Namespace != ns {
			t.Errorf("snapshot of pid %d namespace %q, want the shim %d of %q", s.Pid, s.Namespace, shim.Pid, ns)
		}
		if s.Reaper.Watched != 2 {
			t.Errorf("reaper watches %d processes, want 2 (the init and the exec)", s.Reaper.Watched)
		}
		if s.Memory.RssKib == 0 || s.Memory.Goroutines == 0 {
			t.Errorf("memory %+v, want a resident size and goroutines", s.Memory)
		}
		if len(s.Tasks) != 1 || s.Tasks[0].ID != id || len(s.Tasks[0].Processes) != 2 {
			t.Fatalf("tasks %+v, want %s with its init and one exec", s.Tasks, id)
		}
		init, e1 := s.Tasks[0].Processes[0], s.Tasks[0].Processes[1]
		if init.ExecID != "" || init.Pid != int(task.Pid()) || init.Status != "running" || init.OutputBytes != initBytes+1 || init.DroppedBytes != 0 ||
			init.Queued != 0 || init.ClientQueued != 0 {
			t.Errorf("init %+v, want pid %d running with %d output bytes, none dropped, nothing queued (the client read it all)", init, task.Pid(), initBytes+1)
		}
		if e1.ExecID != "e1" || e1.Pid != int(proc.Pid()) || e1.Status != "running" || e1.OutputBytes != uint64(len("exec-out\n")) {
			t.Errorf("exec %+v, want e1 pid %d running with %d output bytes", e1, proc.Pid(), len("exec-out\n"))
		}

		if err := proc.Kill(ctx, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		if code := exitCode(t, ctx, execStatus); code != 137 {
			t.Fatalf("exec exit %d, want 137", code)
		}
		waitFor(t, 5*time.Second, "the event queue to drain", func() bool {
			s = introspect(t, bundle)
			return s.Events.Pending == 0
		})
		if e1 := s.Tasks[0].Processes[1]; e1.Status != "stopped" || e1.ExitStatus != 137 {
			t.Errorf("exec after SIGKILL %+v, want stopped with 137", e1)
		}
		if s.Reaper.Watched != 1 {
			t.Errorf("reaper watches %d processes after the exec's exit, want 1 (the init)", s.Reaper.Watched)
		}
		// create, start, exec-added, exec-started, exit at least.
		if s.Events.Forwarded < 5 || s.Events.Dropped != 0 {
			t.Errorf("events %+v, want at least 5 forwarded and none dropped", s.Events)
		}

		cmd := exec.Command(harness.ShimUnderTest(), "-bundle", t.TempDir(), "introspect")
		msg, err := cmd.CombinedOutput()
		if err == nil || !strings.Contains(string(msg), "find the shim of bundle") {
			t.Errorf("introspect of a bundle without a shim: %v %q, want a failure that says so", err, msg)
		}
	})
}
