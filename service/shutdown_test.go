package service

import (
	"context"
	"encoding/json"
	"slices"
	"testing"

	"github.com/containerd/errdefs"

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
	// Through the wire form, as the next binary reads it.
	data, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	var handed State
	if err := json.Unmarshal(data, &handed); err != nil {
		t.Fatal(err)
	}
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
