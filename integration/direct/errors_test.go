package direct

import (
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	taskv3 "github.com/containerd/containerd/api/runtime/task/v3"
	tasktypes "github.com/containerd/containerd/api/types/task"
	"google.golang.org/protobuf/types/known/anypb"
)

// Errors carry the errdefs classes containerd and its clients act on
// (PROTOCOL.md §3.2, §3.3): unknown ids NotFound, duplicates AlreadyExists,
// wrong states FailedPrecondition, bad requests InvalidArgument. Connect
// never fails.
func TestErrors(t *testing.T) {
	t.Parallel()
	env := NewEnv(t)
	c := env.Run(t, Config{Mode: Bootstrap, Name: "err", Args: loopArgs, NullIO: true})
	ctx := TestContext(t, time.Minute)
	api := c.Task()

	t.Run("unknown-id", func(t *testing.T) {
		const id = "no-such-task"
		calls := map[string]func() error{
			"State":   func() error { return errOf(api.State(ctx, &taskv3.StateRequest{ID: id})) },
			"Start":   func() error { return errOf(api.Start(ctx, &taskv3.StartRequest{ID: id})) },
			"Delete":  func() error { return errOf(api.Delete(ctx, &taskv3.DeleteRequest{ID: id})) },
			"Kill":    func() error { return errOf(api.Kill(ctx, &taskv3.KillRequest{ID: id, Signal: sigKILL})) },
			"Wait":    func() error { return errOf(api.Wait(ctx, &taskv3.WaitRequest{ID: id})) },
			"Pids":    func() error { return errOf(api.Pids(ctx, &taskv3.PidsRequest{ID: id})) },
			"Stats":   func() error { return errOf(api.Stats(ctx, &taskv3.StatsRequest{ID: id})) },
			"CloseIO": func() error { return errOf(api.CloseIO(ctx, &taskv3.CloseIORequest{ID: id, Stdin: true})) },
			"ResizePty": func() error {
				return errOf(api.ResizePty(ctx, &taskv3.ResizePtyRequest{ID: id, Width: 80, Height: 24}))
			},
			"Pause":  func() error { return errOf(api.Pause(ctx, &taskv3.PauseRequest{ID: id})) },
			"Resume": func() error { return errOf(api.Resume(ctx, &taskv3.ResumeRequest{ID: id})) },
			"Exec": func() error {
				r := c.ExecRequest(t, "e1", []string{"true"}, nil)
				r.ID = id
				return errOf(api.Exec(ctx, r))
			},
		}
		for name, call := range calls {
			expectClass(t, name+" of an unknown task", call(), "NotFound")
		}
	})

	t.Run("unknown-exec", func(t *testing.T) {
		const ex = "no-such-exec"
		calls := map[string]func() error{
			"State":  func() error { return errOf(api.State(ctx, &taskv3.StateRequest{ID: c.ID, ExecID: ex})) },
			"Start":  func() error { return errOf(api.Start(ctx, &taskv3.StartRequest{ID: c.ID, ExecID: ex})) },
			"Delete": func() error { return errOf(api.Delete(ctx, &taskv3.DeleteRequest{ID: c.ID, ExecID: ex})) },
			"Kill":   func() error { return errOf(api.Kill(ctx, &taskv3.KillRequest{ID: c.ID, ExecID: ex, Signal: sigKILL})) },
			"Wait":   func() error { return errOf(api.Wait(ctx, &taskv3.WaitRequest{ID: c.ID, ExecID: ex})) },
			"CloseIO": func() error {
				return errOf(api.CloseIO(ctx, &taskv3.CloseIORequest{ID: c.ID, ExecID: ex, Stdin: true}))
			},
		}
		for name, call := range calls {
			expectClass(t, name+" of an unknown exec", call(), "NotFound")
		}
	})

	t.Run("connect", func(t *testing.T) {
		r, err := api.Connect(ctx, &taskv3.ConnectRequest{ID: "no-such-task"})
		if err != nil {
			t.Fatalf("Connect with an unknown id: %v (it is containerd's liveness probe: it must not fail)", err)
		}
		if r.GetShimPid() != uint32(c.Shim.Pid) || r.GetTaskPid() != 0 {
			t.Errorf("Connect unknown id: shim pid %d task pid %d, want %d 0", r.GetShimPid(), r.GetTaskPid(), c.Shim.Pid)
		}
		r, err = api.Connect(ctx, &taskv3.ConnectRequest{ID: c.ID})
		if err != nil || r.GetShimPid() != uint32(c.Shim.Pid) || r.GetTaskPid() != c.Pid {
			t.Errorf("Connect %s: %v, shim pid %d task pid %d, want %d %d", c.ID, err, r.GetShimPid(), r.GetTaskPid(), c.Shim.Pid, c.Pid)
		}
	})

	t.Run("duplicate-create", func(t *testing.T) {
		_, err := api.Create(ctx, c.CreateRequest())
		expectClass(t, "second Create of the same id", err, "AlreadyExists")
		st := expectStatus(t, ctx, c, "", tasktypes.Status_CREATED)
		if st.GetPid() != c.Pid {
			t.Errorf("after the refused Create the task has pid %d, want %d", st.GetPid(), c.Pid)
		}
	})

	t.Run("bad-create", func(t *testing.T) {
		bundle := c.Bundle.Dir
		cases := []struct {
			name, id, bundle, class string
		}{
			{"relative bundle", "rel-" + RandID(4), "relative/bundle", "InvalidArgument"},
			{"unclean bundle", "unclean-" + RandID(4), bundle + "/../" + filepath.Base(bundle), "InvalidArgument"},
			{"missing bundle", "missing-" + RandID(4), filepath.Join(t.TempDir(), "nothing-here"), "NotFound"},
			{"bundle without config.json", "empty-" + RandID(4), t.TempDir(), "NotFound"},
			{"bundle of another task", "other-" + RandID(4), bundle, "AlreadyExists|InvalidArgument|FailedPrecondition"},
			{"bad id", "bad/id", bundle, "InvalidArgument"},
		}
		for _, tc := range cases {
			_, err := api.Create(ctx, &taskv3.CreateTaskRequest{ID: tc.id, Bundle: tc.bundle})
			got := ErrClass(err)
			if !containsWord(tc.class, got) {
				t.Errorf("Create with a %s: %v (class %q), want %s", tc.name, err, got, tc.class)
			}
		}
	})

	t.Run("wrong-state", func(t *testing.T) {
		start(t, ctx, c, "")
		_, err := api.Start(ctx, &taskv3.StartRequest{ID: c.ID})
		expectClass(t, "second Start", err, "FailedPrecondition")
		_, err = api.Delete(ctx, &taskv3.DeleteRequest{ID: c.ID})
		expectClass(t, "Delete of a running task", err, "FailedPrecondition")

		addExec(t, ctx, c, "dup", loopArgs, nil)
		_, err = api.Exec(ctx, c.ExecRequest(t, "dup", loopArgs, nil))
		expectClass(t, "Exec of a duplicate exec id", err, "AlreadyExists")
		r := c.ExecRequest(t, "bad/exec", loopArgs, nil)
		_, err = api.Exec(ctx, r)
		expectClass(t, "Exec with an invalid exec id", err, "InvalidArgument")
		// Its /tasks/exit would carry the container's id as its own, which clients (CRI,
		// dockerd) take for the container's exit.
		_, err = api.Exec(ctx, c.ExecRequest(t, c.ID, loopArgs, nil))
		expectClass(t, "Exec whose id is the container's", err, "InvalidArgument")
		r = c.ExecRequest(t, "nospec", loopArgs, nil)
		r.Spec = nil
		_, err = api.Exec(ctx, r)
		expectClass(t, "Exec without a process spec", err, "InvalidArgument")
		_, err = api.ResizePty(ctx, &taskv3.ResizePtyRequest{ID: c.ID, Width: 1 << 16, Height: 24})
		expectClass(t, "ResizePty to 65536 columns", err, "InvalidArgument")
		_, err = api.ResizePty(ctx, &taskv3.ResizePtyRequest{ID: c.ID, Width: 80, Height: 24})
		expectClass(t, "ResizePty to 80x24 of a process without a terminal", err, "")
		_, err = api.Kill(ctx, &taskv3.KillRequest{ID: c.ID, ExecID: "dup", Signal: sigKILL})
		expectClass(t, "Kill of an exec never started", err, "FailedPrecondition")
		_, err = api.Update(ctx, &taskv3.UpdateTaskRequest{ID: c.ID, Resources: &anypb.Any{TypeUrl: "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources", Value: []byte("{not json")}})
		if err == nil {
			t.Errorf("Update with malformed resources succeeded")
		}
		deleteTask(t, ctx, c, "dup")

		kill(t, ctx, c, "", sigKILL)
		wait(t, ctx, c, "")
		_, err = api.Exec(ctx, c.ExecRequest(t, "late", []string{"true"}, nil))
		if err == nil {
			_, err = api.Start(ctx, &taskv3.StartRequest{ID: c.ID, ExecID: "late"})
		}
		expectClass(t, "exec into a stopped task", err, "FailedPrecondition")
		_, err = api.Kill(ctx, &taskv3.KillRequest{ID: c.ID, Signal: sigKILL})
		expectClass(t, "Kill of an exited init", err, "NotFound")
		deleteTask(t, ctx, c, "")
	})
}

// errOf keeps the error of a call's two results.
func errOf[R any](_ R, err error) error { return err }

// containsWord reports whether word is one of the |-separated alternatives.
func containsWord(alternatives, word string) bool {
	return slices.Contains(strings.Split(alternatives, "|"), word)
}
