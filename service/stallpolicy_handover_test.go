package service

import (
	"os"
	"testing"
	"time"

	shimio "github.com/example/containerd-shim-example-v2/io"
	"github.com/example/containerd-shim-example-v2/process"
)

// noFDs keeps no descriptor: the containers exported here have none.
type noFDs struct{}

func (noFDs) KeepDup(*os.File) (int, error)    { return -1, os.ErrInvalid }
func (noFDs) KeepRaw(int, string) (int, error) { return -1, os.ErrInvalid }

// A Docker container handed over by a binary that gave Docker's namespaces
// the default stall timeout (its state says 0, not configured, and its
// processes' relays carry the default) takes Docker's policy in the new
// binary: no timeout, for its execs to come and for the running processes'
// relays. An upgrade is how that change reaches running containers. Other
// namespaces, and a timeout the options set, stay as handed over.
func TestImportedDockerContainerGetsNoStallTimeout(t *testing.T) {
	for _, tc := range []struct {
		ns                  string
		configured, relays  time.Duration
		wantConfig, wantRel time.Duration
	}{
		{"moby", 0, shimio.DefaultStallTimeout, -1, -1},
		{"plugins.moby", 0, shimio.DefaultStallTimeout, -1, -1},
		{"moby", -1, -1, -1, -1},                                                         // handed over by a binary that knows
		{"moby", 20 * time.Second, 20 * time.Second, 20 * time.Second, 20 * time.Second}, // configured
		{"k8s.io", 0, shimio.DefaultStallTimeout, 0, shimio.DefaultStallTimeout},
		// Layouts 1 to 4 carry no container timeout (0) even when the
		// options set one; the running processes' relays carry theirs,
		// which the execs to come get too.
		{"moby", 0, time.Minute, time.Minute, time.Minute},
	} {
		s := New(Config{Namespace: tc.ns})
		proc := func(id string) process.ProcessState {
			return process.ProcessState{ID: id, Status: process.Stopped, Pidfd: -1,
				Pipes: &shimio.PipesState{Null: true, StallTimeout: tc.relays}}
		}
		st := State{Containers: []process.ContainerState{{ID: "c", Namespace: tc.ns, Bundle: t.TempDir(),
			StallTimeout: tc.configured, Init: proc(""), Execs: []process.ProcessState{proc("e")}}}}
		if err := s.Import(st, nil); err != nil {
			t.Fatal(err)
		}
		got, err := s.Export(noFDs{})
		if err != nil {
			t.Fatal(err)
		}
		c := got.Containers[0]
		if c.StallTimeout != tc.wantConfig {
			t.Errorf("%s, configured %v: the container's stall timeout for execs to come is %v, want %v", tc.ns, tc.configured, c.StallTimeout, tc.wantConfig)
		}
		for _, ps := range append([]process.ProcessState{c.Init}, c.Execs...) {
			if ps.Pipes == nil || ps.Pipes.StallTimeout != tc.wantRel {
				t.Errorf("%s, configured %v: process %q's relays: %+v, want stall timeout %v", tc.ns, tc.configured, ps.ID, ps.Pipes, tc.wantRel)
			}
		}
	}
}
