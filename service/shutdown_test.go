package service

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"testing"

	runcopts "github.com/containerd/containerd/api/types/runc/options"
	"github.com/containerd/errdefs"
	"google.golang.org/protobuf/types/known/anypb"

	taskapi "github.com/example/containerd-shim-example-v2/proto/api/runtime/task/v2"
	groupapi "github.com/example/containerd-shim-example-v2/proto/group/v1"
	introspect "github.com/example/containerd-shim-example-v2/proto/introspect/v1"
)

// A daemon that has decided to leave refuses an in-place upgrade: the
// successor would take over nothing to serve and stay until the
// abandonment timeout.
func TestLeavingDaemonIsNotHandable(t *testing.T) {
	exits := 0
	s := New(Config{RequestExit: func() { exits++ }})
	if err := s.Handable(); err != nil {
		t.Fatalf("an empty, serving daemon: %v", err)
	}
	if _, err := s.Shutdown(context.Background(), &taskapi.ShutdownRequest{}); err != nil {
		t.Fatal(err)
	}
	if exits != 1 {
		t.Fatalf("Shutdown of an empty daemon requested %d exits, want 1", exits)
	}
	if err := s.Handable(); !errdefs.IsFailedPrecondition(err) {
		t.Errorf("upgrade of a leaving daemon: %v, want FailedPrecondition", err)
	}
}

// A task announced by `start` (Join) and not yet created is handed over by
// an in-place upgrade: the next binary's Shutdown, with nothing else held,
// does not leave under the Create that is coming, and the wait keeps its
// deadline rather than starting afresh.
func TestExpectedTaskIsHandedOver(t *testing.T) {
	old := New(Config{})
	if _, err := old.Join(context.Background(), &groupapi.JoinRequest{Id: "c9"}); err != nil {
		t.Fatal(err)
	}
	st, err := old.Export(noFDs{})
	if err != nil {
		t.Fatal(err)
	}
	if left, ok := st.Expected["c9"]; !ok || left <= 0 || left > joinTTL {
		t.Fatalf("exported expectations %v, want c9 with at most %v left", st.Expected, joinTTL)
	}
	handed := throughWire(t, st)
	exits := 0
	next := New(Config{RequestExit: func() { exits++ }})
	if err := next.Import(handed, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := next.Shutdown(context.Background(), &taskapi.ShutdownRequest{}); err != nil {
		t.Fatal(err)
	}
	if exits != 0 {
		t.Fatal("the next binary left while a handed-over task's Create was expected")
	}
	if got := next.cfg.Gate.Expecting()["c9"]; got > st.Expected["c9"] {
		t.Errorf("the wait restarted: %v left, %v when handed over", got, st.Expected["c9"])
	}
	snap, err := next.Introspect(context.Background(), &introspect.SnapshotRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(snap.ExpectedTasks, []string{"c9"}) {
		t.Errorf("introspection shows expected tasks %q, want [c9]", snap.ExpectedTasks)
	}
}

// A task announced by `start` (Join) whose Create is refused before it is
// reserved is no longer expected: containerd follows the failed Create with
// Delete and Shutdown, and that Shutdown, with nothing else held, lets the
// daemon leave, as the stock shim's does (it had been kept until the
// announcement expired and the abandonment watch gave up, minutes later).
func TestJoinedTaskWhoseCreateIsRefusedIsNoLongerExpected(t *testing.T) {
	ctx := context.Background()
	bundle := t.TempDir()
	if err := os.WriteFile(filepath.Join(bundle, "config.json"), []byte(`{"process":{"args":["true"]}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		what string
		req  *taskapi.CreateTaskRequest
	}{
		{"a runtime binary that is not there", &taskapi.CreateTaskRequest{ID: "b", Bundle: bundle,
			Options: anyOf(t, "containerd.runc.v1.Options", &runcopts.Options{BinaryName: filepath.Join(bundle, "no-such-runtime")})}},
		{"options that do not decode", &taskapi.CreateTaskRequest{ID: "b", Bundle: bundle,
			Options: &anypb.Any{TypeUrl: "containerd.runc.v1.Options", Value: []byte{0xff}}}},
		{"a bundle that is not there", &taskapi.CreateTaskRequest{ID: "b", Bundle: filepath.Join(bundle, "gone")}},
	} {
		exits := 0
		s := New(Config{RequestExit: func() { exits++ }})
		if _, err := s.Join(ctx, &groupapi.JoinRequest{Id: "b"}); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Create(ctx, c.req); err == nil {
			t.Fatalf("Create with %s succeeded", c.what)
		}
		if _, err := s.Delete(ctx, &taskapi.DeleteRequest{ID: "b"}); !errdefs.IsNotFound(err) {
			t.Fatalf("%s: Delete after the failed Create: %v, want NotFound", c.what, err)
		}
		if _, err := s.Shutdown(ctx, &taskapi.ShutdownRequest{ID: "b"}); err != nil {
			t.Fatal(err)
		}
		if exits != 1 {
			t.Errorf("%s: Shutdown after the only task's Create failed requested %d exits, want 1 (still expecting %v)",
				c.what, exits, s.cfg.Gate.Expecting())
		}
	}
}

// throughWire is st as the next binary reads it: through its JSON form.
func throughWire(t *testing.T, st *State) State {
	t.Helper()
	data, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	var handed State
	if err := json.Unmarshal(data, &handed); err != nil {
		t.Fatal(err)
	}
	return handed
}
