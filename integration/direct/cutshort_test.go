package direct

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	taskv3 "github.com/containerd/containerd/api/runtime/task/v3"
	runcopts "github.com/containerd/containerd/api/types/runc/options"
	tasktypes "github.com/containerd/containerd/api/types/task"
)

// runcLingeringAfter returns a runc wrapper that runs the runtime's command
// to its end and then, for command, lingers for seconds before it exits (in
// the same process, so the shim's kill at the request's deadline ends it):
// the runtime has done its part, and is killed before it reports it, as a
// runc killed while it waits for the freezer to settle is.
func runcLingeringAfter(t *testing.T, command string, seconds int) string {
	t.Helper()
	wrapper := filepath.Join(t.TempDir(), "lingering-"+command+"-runc")
	script := fmt.Sprintf("#!/bin/sh\nfor a; do if [ \"$a\" = %s ]; then runc \"$@\" || exit; exec sleep %d; fi; done\nexec runc \"$@\"\n",
		command, seconds)
	if err := os.WriteFile(wrapper, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return wrapper
}

// freezerState reads the container's cgroup v1 freezer.state (or the v2
// cgroup.freeze, as FROZEN or THAWED).
func freezerState(t *testing.T, c *Container) string {
	t.Helper()
	if b, err := os.ReadFile(filepath.Join("/sys/fs/cgroup/freezer", c.CgroupPath, "freezer.state")); err == nil {
		return strings.TrimSpace(string(b))
	}
	b, err := os.ReadFile(filepath.Join("/sys/fs/cgroup", c.CgroupPath, "cgroup.freeze"))
	if err != nil {
		t.Skipf("no freezer to read for %s: %v", c.CgroupPath, err)
	}
	if strings.TrimSpace(string(b)) == "1" {
		return "FROZEN"
	}
	return "THAWED"
}

// settled returns the task's state once no Pause runs in the shim (the
// shim's side of a request may end a little after the client's deadline).
func settled(t *testing.T, ctx context.Context, c *Container) *taskv3.StateResponse {
	t.Helper()
	var st *taskv3.StateResponse
	until(t, "the shim's side of the request ends", func() bool {
		st = state(t, ctx, c, "")
		return st.Status != tasktypes.Status_PAUSING
	})
	time.Sleep(time.Second) // the runtime's kill, and what the shim does after it
	return state(t, ctx, c, "")
}

// A Pause whose deadline passes after the runtime has frozen the container
// (runc pause killed while it waits for the freezer to settle) must not
// leave the container frozen while State says RUNNING: a retried Pause then
// fails (runc finds it paused, "not running") and Resume is refused
// (RUNNING), so nothing thaws it. After the failed Pause, State agrees
// with the freezer, and the request that follows from it works.
func TestPauseCutShortByItsDeadline(t *testing.T) {
	t.Parallel()
	wrapper := runcLingeringAfter(t, "pause", 5)
	env := NewEnv(t)
	c := env.Run(t, Config{Mode: Bootstrap, Name: "pausecut", Args: loopArgs, NullIO: true,
		Options: runcOptions(t, &runcopts.Options{BinaryName: wrapper})})
	ctx := TestContext(t, time.Minute)
	start(t, ctx, c, "")
	pctx, cancel := context.WithTimeout(ctx, time.Second)
	_, err := c.Task().Pause(pctx, &taskv3.PauseRequest{ID: c.ID})
	cancel()
	if err == nil {
		t.Fatal("Pause succeeded though the runtime outlived its deadline")
	}
	t.Logf("Pause: %v", err)
	st := settled(t, ctx, c)
	frozen := freezerState(t, c)
	t.Logf("after the Pause cut short: State %v, freezer %s", st.Status, frozen)
	switch st.Status {
	case tasktypes.Status_RUNNING:
		if frozen != "THAWED" {
			t.Errorf("State says RUNNING, the cgroup's freezer %s", frozen)
		}
		if _, err := c.Task().Pause(ctx, &taskv3.PauseRequest{ID: c.ID}); err != nil {
			t.Errorf("retried Pause: %v", err)
		}
	case tasktypes.Status_PAUSED:
		if frozen != "FROZEN" {
			t.Errorf("State says PAUSED, the cgroup's freezer %s", frozen)
		}
	default:
		t.Errorf("after the Pause cut short: %v, want RUNNING or PAUSED", st.Status)
	}
	if _, err := c.Task().Resume(ctx, &taskv3.ResumeRequest{ID: c.ID}); err != nil {
		t.Errorf("Resume: %v", err)
	}
	if f := freezerState(t, c); f != "THAWED" {
		t.Errorf("after Resume the freezer is %s", f)
		// Thaw it so that the cleanup can stop it.
		_ = os.WriteFile(filepath.Join("/sys/fs/cgroup/freezer", c.CgroupPath, "freezer.state"), []byte("THAWED"), 0o644)
	}
	stop(t, ctx, c)
}

// The same for a Resume whose deadline passes after the runtime has thawed
// the container: State must not say PAUSED while it runs (a retried Resume
// fails "not paused", and Pause is refused as PAUSED).
func TestResumeCutShortByItsDeadline(t *testing.T) {
	t.Parallel()
	wrapper := runcLingeringAfter(t, "resume", 5)
	env := NewEnv(t)
	c := env.Run(t, Config{Mode: Bootstrap, Name: "resumecut", Args: loopArgs, NullIO: true,
		Options: runcOptions(t, &runcopts.Options{BinaryName: wrapper})})
	ctx := TestContext(t, time.Minute)
	start(t, ctx, c, "")
	if _, err := c.Task().Pause(ctx, &taskv3.PauseRequest{ID: c.ID}); err != nil {
		t.Fatalf("Pause: %v", err)
	}
	rctx, cancel := context.WithTimeout(ctx, time.Second)
	_, err := c.Task().Resume(rctx, &taskv3.ResumeRequest{ID: c.ID})
	cancel()
	if err == nil {
		t.Fatal("Resume succeeded though the runtime outlived its deadline")
	}
	t.Logf("Resume: %v", err)
	st := settled(t, ctx, c)
	frozen := freezerState(t, c)
	t.Logf("after the Resume cut short: State %v, freezer %s", st.Status, frozen)
	switch st.Status {
	case tasktypes.Status_PAUSED:
		if frozen != "FROZEN" {
			t.Errorf("State says PAUSED, the cgroup's freezer %s", frozen)
		}
		if _, err := c.Task().Resume(ctx, &taskv3.ResumeRequest{ID: c.ID}); err != nil {
			t.Errorf("retried Resume: %v", err)
		}
	case tasktypes.Status_RUNNING:
		if frozen != "THAWED" {
			t.Errorf("State says RUNNING, the cgroup's freezer %s", frozen)
		}
	default:
		t.Errorf("after the Resume cut short: %v, want RUNNING or PAUSED", st.Status)
	}
	if _, err := c.Task().Pause(ctx, &taskv3.PauseRequest{ID: c.ID}); err != nil {
		t.Errorf("Pause after it: %v", err)
	}
	if st := state(t, ctx, c, ""); st.Status == tasktypes.Status_PAUSED {
		if _, err := c.Task().Resume(ctx, &taskv3.ResumeRequest{ID: c.ID}); err != nil {
			t.Errorf("Resume: %v", err)
		}
	}
	if f := freezerState(t, c); f != "THAWED" {
		_ = os.WriteFile(filepath.Join("/sys/fs/cgroup/freezer", c.CgroupPath, "freezer.state"), []byte("THAWED"), 0o644)
	}
	stop(t, ctx, c)
}

// A signal to every process (Kill with all) whose deadline passes while
// runc has the container frozen (runc's kill --all freezes the cgroup,
// signals every process and thaws it; the wrapper freezes it as runc does
// and is killed before the thaw): a lost signal is acceptable, a running
// container left frozen while State says RUNNING is not (a Pause then fails
// "not running" and a Resume is refused).
func TestKillAllCutShortByItsDeadline(t *testing.T) {
	t.Parallel()
	wrapper := filepath.Join(t.TempDir(), "freezing-kill-runc")
	// The runtime's global flags (--root, --log) are the arguments before
	// "kill"; the container's id is the one after --all.
	script := `#!/bin/sh
case " $* " in *" kill --all "*) ;; *) exec runc "$@";; esac
g=
while [ "$1" != kill ]; do g="$g $1"; shift; done
runc $g pause "$3" || exit
exec sleep 5
`
	if err := os.WriteFile(wrapper, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	env := NewEnv(t)
	c := env.Run(t, Config{Mode: Bootstrap, Name: "killcut", Args: loopArgs, NullIO: true,
		Options: runcOptions(t, &runcopts.Options{BinaryName: wrapper})})
	ctx := TestContext(t, time.Minute)
	start(t, ctx, c, "")
	kctx, cancel := context.WithTimeout(ctx, time.Second)
	// SIGWINCH: ignored by sleep, so the container lives on.
	_, err := c.Task().Kill(kctx, &taskv3.KillRequest{ID: c.ID, Signal: 28, All: true})
	cancel()
	if err == nil {
		t.Fatal("Kill succeeded though the runtime outlived its deadline")
	}
	t.Logf("Kill: %v", err)
	st := settled(t, ctx, c)
	frozen := freezerState(t, c)
	t.Logf("after the Kill cut short: State %v, freezer %s", st.Status, frozen)
	switch {
	case st.Status == tasktypes.Status_RUNNING && frozen != "THAWED":
		t.Errorf("State says RUNNING, the cgroup's freezer %s", frozen)
		if _, err := c.Task().Pause(ctx, &taskv3.PauseRequest{ID: c.ID}); err != nil {
			t.Errorf("Pause: %v", err)
		}
		if _, err := c.Task().Resume(ctx, &taskv3.ResumeRequest{ID: c.ID}); err != nil {
			t.Errorf("Resume: %v", err)
		}
	case st.Status == tasktypes.Status_PAUSED && frozen != "FROZEN":
		t.Errorf("State says PAUSED, the cgroup's freezer %s", frozen)
	case st.Status == tasktypes.Status_PAUSED:
		if _, err := c.Task().Resume(ctx, &taskv3.ResumeRequest{ID: c.ID}); err != nil {
			t.Errorf("Resume: %v", err)
		}
	}
	if f := freezerState(t, c); f != "THAWED" {
		t.Errorf("the freezer stays %s", f)
		_ = os.WriteFile(filepath.Join("/sys/fs/cgroup/freezer", c.CgroupPath, "freezer.state"), []byte("THAWED"), 0o644)
	}
	stop(t, ctx, c)
}
