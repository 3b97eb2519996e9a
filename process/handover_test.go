package process

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"github.com/example/containerd-shim-example-v2/cgroup"
	shimio "github.com/example/containerd-shim-example-v2/io"
	"github.com/example/containerd-shim-example-v2/reaper"
)

// noFDs hands over nothing: the container below has no descriptors.
type noFDs struct{ shimio.FDKeeper }

func (noFDs) KeepRaw(int, string) (int, error) { panic("no descriptor to keep") }

// A stopped container crosses an upgrade (Export, the state as JSON,
// Import) with its cgroup, so Stats still reads it, and with the OOM scope's
// marks and the kills counted below it; the layout 2 state, without them,
// leaves a stopped container without a cgroup, as before.
func TestStoppedContainerKeepsItsCgroupAcrossAHandover(t *testing.T) {
	dir := t.TempDir()
	cg, err := cgroup.FromState(cgroup.DefaultRoot, cgroup.State{Dirs: map[string]string{"memory": dir + "/memory", "cpu": dir + "/cpu"}})
	if err != nil {
		t.Fatal(err)
	}
	c := &Container{ID: "c", Bundle: dir, execs: map[string]*Process{}, initReaped: true, cg: cg, oomBelow: 2, oomScope: cgroup.OOMScopeContainer,
		limitMarks: cgroup.LimitMarks{OwnFailures: 5, AtLimit: true, Ancestors: map[string]uint64{"/sys/fs/cgroup/memory/kubepods": 9}}}
	c.init = newProcess(c, "", shimio.Config{}, nil)
	c.init.pid, c.init.status, c.init.exitCode, c.init.exitedAt = 1<<30, Stopped, 137, time.Now()

	st, err := c.Export(noFDs{})
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	var back ContainerState
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	next, err := Import(reaper.New(), back, CreateConfig{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if next.cg == nil || next.cg.Dir("memory") != dir+"/memory" || next.cg.Dir("cpu") != dir+"/cpu" {
		t.Fatalf("cgroup after the handover: %+v, want the container's", next.cg)
	}
	if !reflect.DeepEqual(next.limitMarks, c.limitMarks) || next.oomBelow != 2 || next.oomScope != c.oomScope {
		t.Errorf("OOM state after the handover: marks %+v below %d scope %q, want %+v 2 %q",
			next.limitMarks, next.oomBelow, next.oomScope, c.limitMarks, c.oomScope)
	}
	if s := next.Init().State(); s.Status != Stopped || s.ExitCode != 137 {
		t.Errorf("init after the handover: %+v", s)
	}

	back.Cgroup, back.LimitMarks = nil, nil // what a layout 2 binary hands over
	if old, err := Import(reaper.New(), back, CreateConfig{}, nil); err != nil || old.cg != nil {
		t.Errorf("a layout 2 state of a stopped container: cgroup %+v (%v), want none", old.cg, err)
	}
}
