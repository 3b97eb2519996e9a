package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/containerd/containerd/api/services/tasks/v1"
	"github.com/containerd/containerd/api/types"
	"google.golang.org/protobuf/proto"

	"github.com/example/containerd-shim-example-v2/integration/harness"
)

// Listing: `ctr task ls` tells running from stopped tasks, and `ctr task ps` lists the
// init's pid and an exec's pid, the exec's row naming its exec id.
func TestTaskListAndPs(t *testing.T) {
	forEachFlavor(t, func(t *testing.T, d *harness.Daemon) {
		ctx, _ := d.NewNamespace(t)
		ctx, cancel := context.WithTimeout(ctx, 45*time.Second)
		defer cancel()
		const running, stopped, execID = "ls1", "ls2", "e1"
		ctrOK(t, ctx, d, ctrRun(d, append([]string{"-d", harness.ImageName, running}, loopArgs...)...)...)
		ctrOK(t, ctx, d, ctrRun(d, "-d", harness.ImageName, stopped, "true")...)
		initRow := waitTaskStatus(t, ctx, d, running, "RUNNING", 10*time.Second)
		waitTaskStatus(t, ctx, d, stopped, "STOPPED", 10*time.Second)
		if rows := ctrTaskList(t, ctx, d); len(rows) != 2 {
			t.Errorf("ctr task ls lists %d tasks, want 2: %v", len(rows), rows)
		}

		ctrOK(t, ctx, d, "task", "exec", "-d", "--fifo-dir", d.FIFODir, "--exec-id", execID, running, "sleep", "1000")
		// The client's LoadProcess does not fill in the pid: ask the task service.
		resp, err := d.Client().TaskService().Get(ctx, &tasks.GetRequest{ContainerID: running, ExecID: execID})
		if err != nil {
			t.Fatalf("get exec %s: %v", execID, err)
		}
		execPid := int(resp.GetProcess().GetPid())
		if execPid == 0 {
			t.Fatalf("exec %s has pid 0: %v", execID, resp.GetProcess())
		}

		// INFO is "-" for plain pids; for an exec ctr 1.6 prints
		// "&ProcessDetails{ExecID:e1,...}" and ctr 2.x `exec_id:"e1"`.
		out := ctrOK(t, ctx, d, "task", "ps", running)
		rows := map[int]string{}
		for _, line := range strings.Split(out, "\n") {
			f := strings.Fields(line)
			if len(f) == 0 {
				continue
			}
			if pid, err := strconv.Atoi(f[0]); err == nil {
				rows[pid] = strings.Join(f[1:], " ")
			}
		}
		if _, ok := rows[initRow.Pid]; !ok {
			t.Errorf("ctr task ps does not list the init's pid %d:\n%s", initRow.Pid, out)
		}
		info, ok := rows[execPid]
		if !ok {
			t.Errorf("ctr task ps does not list the exec's pid %d:\n%s", execPid, out)
		} else if !strings.Contains(info, execID) {
			t.Errorf("ctr task ps row of the exec (pid %d): INFO %q does not name exec id %q", execPid, info, execID)
		}
	})
}

// -info: the shim binary answers `-info` (empty stdin) with a RuntimeInfo naming the
// runtime and carrying the OCI runtime features. It is the same binary under both
// flavors; each run resolves it on that daemon's PATH.
func TestShimInfo(t *testing.T) {
	const featuresURL = "types.containerd.io/opencontainers/runtime-spec/1/features/Features"
	forEachFlavor(t, func(t *testing.T, d *harness.Daemon) {
		bin := lookPathList(harness.RuntimeBinaryName(harness.Runtime()), d.PATH)
		if bin == "" {
			t.Fatalf("no %s on the daemon's PATH %s", harness.RuntimeBinaryName(harness.Runtime()), d.PATH)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, bin, "-info")
		cmd.Stdin = bytes.NewReader(nil)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil {
			if harness.Runtime() == "io.containerd.runc.v2" && d.Flavor == harness.Flavor16 {
				// Known stock difference: -info came with containerd 2.0's shims.
				t.Skipf("containerd 1.6's stock runc shim has no -info (%v, stderr %q)", err, stderr.String())
			}
			t.Fatalf("%s -info: %v (stderr %q)", bin, err, stderr.String())
		}
		var info types.RuntimeInfo
		if err := proto.Unmarshal(stdout.Bytes(), &info); err != nil {
			t.Fatalf("-info stdout (%d bytes) is not a RuntimeInfo: %v", stdout.Len(), err)
		}
		if info.GetName() != harness.Runtime() {
			t.Errorf("RuntimeInfo name %q, want %q", info.GetName(), harness.Runtime())
		}
		f := info.GetFeatures()
		if f == nil {
			t.Fatalf("RuntimeInfo has no features")
		}
		if f.GetTypeUrl() != featuresURL {
			t.Errorf("features type %q, want %q", f.GetTypeUrl(), featuresURL)
		}
		var features map[string]json.RawMessage
		if err := json.Unmarshal(f.GetValue(), &features); err != nil {
			t.Fatalf("features value is not JSON: %v: %q", err, f.GetValue())
		}
		if _, ok := features["ociVersionMax"]; !ok {
			t.Errorf("features JSON has no ociVersionMax: %s", f.GetValue())
		}
		t.Logf("-info: name %q version %q revision %q, ociVersionMax %s", info.GetName(),
			info.GetVersion().GetVersion(), info.GetVersion().GetRevision(), features["ociVersionMax"])
	})
}

// lookPathList finds an executable file name in a PATH-style list of directories.
func lookPathList(name, list string) string {
	for _, dir := range filepath.SplitList(list) {
		p := filepath.Join(dir, name)
		if st, err := exec.LookPath(p); err == nil {
			return st
		}
	}
	return ""
}
