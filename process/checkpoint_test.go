package process

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"

	shimio "github.com/example/containerd-shim-example-v2/io"
	"github.com/example/containerd-shim-example-v2/oci"
	"github.com/example/containerd-shim-example-v2/reaper"
)

// A failed checkpoint's error names the CRIU log the shim keeps
// (<bundle>/criu-dump.log), as the stock shim's does: the runtime's own
// message names dump.log in the default work directory, which the shim
// removes before the error reaches the client.
func TestCheckpointErrorNamesTheKeptCRIULog(t *testing.T) {
	dir := t.TempDir()
	fake := filepath.Join(dir, "fake-runtime")
	// Writes a CRIU log into --work-path and fails the way runc does.
	script := "#!/bin/sh\nwhile [ $# -gt 0 ]; do [ \"$1\" = --work-path ] && work=$2; shift; done\n" +
		"mkdir -p \"$work\" && echo 'Error (criu/vdso.c:1): vdso: boom' > \"$work/dump.log\"\n" +
		"echo \"criu failed: type DUMP errno 0 log file: $work/dump.log\" >&2; exit 1\n"
	if err := os.WriteFile(fake, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	r := reaper.New()
	ctx, stop := context.WithCancel(context.Background())
	t.Cleanup(stop)
	go r.Run(ctx)
	c := &Container{ID: "c", Bundle: dir, rt: oci.Runtime{Binary: fake, Dir: dir, Reaper: r}}
	c.execsIdle = sync.NewCond(&c.mu)
	c.init = newProcess(c, "", shimio.Config{}, nil)
	c.init.status = Running

	err := c.Checkpoint(context.Background(), oci.CheckpointOpts{ImagePath: filepath.Join(dir, "img")}, nil)
	if err == nil {
		t.Fatal("checkpoint through a failing runtime succeeded")
	}
	kept := filepath.Join(dir, "criu-dump.log")
	if data, rerr := os.ReadFile(kept); rerr != nil || !strings.Contains(string(data), "boom") {
		t.Fatalf("kept CRIU log %s: %q, %v", kept, data, rerr)
	}
	if _, serr := os.Stat(filepath.Join(dir, "criu-work")); !os.IsNotExist(serr) {
		t.Errorf("default work directory left behind: %v", serr)
	}
	if !strings.Contains(err.Error(), kept) {
		t.Errorf("error %q does not name the kept CRIU log %s", err, kept)
	}
}

// A container created from a checkpoint has no processes until Start
// restores it: an exec is refused there (FailedPrecondition), as the stock
// shim refuses it, instead of being added (and announced) only for its
// Start to fail with the runtime's "container does not exist".
func TestExecRefusedBeforeRestore(t *testing.T) {
	c := &Container{ID: "c", Bundle: t.TempDir(), execs: make(map[string]*Process)}
	c.init = newProcess(c, "", shimio.Config{}, nil)
	c.init.restore = &oci.RestoreOpts{CheckpointOpts: oci.CheckpointOpts{ImagePath: "/ckpt"}}
	_, err := c.Exec("e1", []byte(`{"args":["true"],"cwd":"/"}`), shimio.Config{})
	if !errdefs.IsFailedPrecondition(err) {
		t.Fatalf("exec before the restore: %v, want FailedPrecondition", err)
	}
	if _, perr := c.Process("e1"); !errdefs.IsNotFound(perr) {
		t.Errorf("the refused exec was registered: %v", perr)
	}
}

// A failed restore quotes CRIU's log and names it (the runtime's own message
// names only "restore.log", relative to a directory the caller never sees);
// a log an earlier attempt left in the image directory is not this
// attempt's reason, and is left out when the runtime fails before running
// CRIU. The task stays created either way.
func TestRestoreErrorQuotesThisAttemptsCRIULog(t *testing.T) {
	dir := t.TempDir()
	img := filepath.Join(dir, "img")
	if err := os.Mkdir(img, 0o700); err != nil {
		t.Fatal(err)
	}
	t.Setenv("FAKE_DIR", dir)
	rt, _ := fakeRuntime(t, dir, `
restore) [ -e "$FAKE_DIR/run-criu" ] && echo 'Error (criu/cr-restore.c:1): boom' > "$FAKE_DIR/img/restore.log"
	echo 'criu failed: type RESTORE errno 0 log file: restore.log' >&2; exit 1;;`)
	c := &Container{ID: "c", Bundle: dir, rt: rt, socketDir: dir, execs: map[string]*Process{}}
	c.execsIdle = sync.NewCond(&c.mu)
	pipes, err := shimio.Open(shimio.Config{}, c.ioEnv(""))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pipes.Close)
	c.init = newProcess(c, "", shimio.Config{}, pipes)
	c.init.restore = &oci.RestoreOpts{CheckpointOpts: oci.CheckpointOpts{ImagePath: img}, PidFile: filepath.Join(dir, "init.pid")}
	log := filepath.Join(img, "restore.log")
	restore := func() error {
		t.Helper()
		err := c.init.Start(context.Background(), func(int) { t.Error("the failed restore was reported started") })
		if err == nil {
			t.Fatal("restore through a failing runtime succeeded")
		}
		if st := c.init.State().Status; st != Created {
			t.Errorf("after the failed restore: %s, want created", st)
		}
		return err
	}

	// An earlier attempt's log, an hour old; this attempt fails before CRIU.
	if err := os.WriteFile(log, []byte("Error (criu/files.c:1): stale\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-time.Hour)
	if err := os.Chtimes(log, old, old); err != nil {
		t.Fatal(err)
	}
	if err := restore(); strings.Contains(err.Error(), "stale") || strings.Contains(err.Error(), log) {
		t.Errorf("error quotes an earlier attempt's CRIU log: %v", err)
	}

	// This attempt's CRIU fails and logs why.
	if err := os.WriteFile(filepath.Join(dir, "run-criu"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := restore(); !strings.Contains(err.Error(), "boom") || !strings.Contains(err.Error(), log) {
		t.Errorf("error does not quote CRIU's reason and name its log %s: %v", log, err)
	}
}

// A checkpoint into a work directory of the caller's (ctr's --work-path)
// that the runtime fails before it runs CRIU (the container stopped
// meanwhile, say) does not quote, or keep as this failure's log, the
// dump.log an earlier checkpoint left there: its reason is not this one's.
func TestCheckpointErrorLeavesOutAnEarlierCRIULog(t *testing.T) {
	dir := t.TempDir()
	work := filepath.Join(dir, "work")
	if err := os.Mkdir(work, 0o700); err != nil {
		t.Fatal(err)
	}
	rt, _ := fakeRuntime(t, dir, `
checkpoint) echo 'Container cannot be checkpointed in stopped state' >&2; exit 1;;`)
	c := &Container{ID: "c", Bundle: dir, rt: rt}
	c.execsIdle = sync.NewCond(&c.mu)
	c.init = newProcess(c, "", shimio.Config{}, nil)
	c.init.status = Running
	stale := filepath.Join(work, "dump.log")
	if err := os.WriteFile(stale, []byte("Error (criu/cr-dump.c:1): stale\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-time.Hour)
	if err := os.Chtimes(stale, old, old); err != nil {
		t.Fatal(err)
	}

	err := c.Checkpoint(context.Background(), oci.CheckpointOpts{ImagePath: filepath.Join(dir, "img"), WorkPath: work}, nil)
	if err == nil {
		t.Fatal("checkpoint through a failing runtime succeeded")
	}
	if strings.Contains(err.Error(), "stale") || strings.Contains(err.Error(), "criu-dump.log") {
		t.Errorf("error quotes an earlier checkpoint's CRIU log: %v", err)
	}
	if _, serr := os.Stat(filepath.Join(dir, "criu-dump.log")); !os.IsNotExist(serr) {
		t.Errorf("an earlier checkpoint's CRIU log kept as this one's: %v", serr)
	}
}

// A checkpoint that stops the container (CRIU kills it before the runtime
// has finished: runc then removes its cgroups and state) is announced before
// the container's exit is: the exit, reported at once, came first, and a
// client deleting the task on it (ctr run, CRI) could have /tasks/delete
// published before /tasks/checkpointed. The fake runtime kills the init
// and returns only once the exit was reported, or after a second when the
// exit is held back, as it now is.
func TestCheckpointThatStopsIsAnnouncedBeforeTheExit(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("FAKE_DIR", dir)
	rt, r := fakeRuntime(t, dir, `
checkpoint) kill -9 "$(cat "$FAKE_DIR/init.pid")"
	i=0; while [ ! -e "$FAKE_DIR/exit-reported" ] && [ $i -lt 100 ]; do sleep 0.01; i=$((i+1)); done; exit 0;;`)
	var mu sync.Mutex
	var order []string
	note := func(what string) {
		mu.Lock()
		order = append(order, what)
		mu.Unlock()
	}
	exited := make(chan struct{})
	c := &Container{ID: "c", Bundle: dir, rt: rt, ownPIDNS: true, execs: map[string]*Process{},
		events: Events{Exited: func(*Process, Snapshot) {
			note("exit")
			_ = os.WriteFile(filepath.Join(dir, "exit-reported"), nil, 0o600)
			close(exited)
		}}}
	c.execsIdle = sync.NewCond(&c.mu)
	c.init = newProcess(c, "", shimio.Config{}, nil)

	cmd := runSleepingInit(t, c, r)
	if err := os.WriteFile(filepath.Join(dir, "init.pid"), []byte(strconv.Itoa(cmd.Process.Pid)), 0o600); err != nil {
		t.Fatal(err)
	}

	err := c.Checkpoint(context.Background(), oci.CheckpointOpts{ImagePath: filepath.Join(dir, "img")}, func() { note("checkpointed") })
	if err != nil {
		t.Fatalf("checkpoint: %v", err)
	}
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
		t.Fatal("the init's exit was never reported")
	}
	mu.Lock()
	defer mu.Unlock()
	if !slices.Equal(order, []string{"checkpointed", "exit"}) {
		t.Errorf("reports in the order %v, want the checkpoint's before the exit", order)
	}
}

// A Pause or Resume during a checkpoint is refused (FailedPrecondition):
// CRIU freezes and thaws the container itself, and a pause in between left
// it running where the task said paused, or failed the dump. Once the
// checkpoint is over they go through; a checkpoint of a paused container
// is allowed, and a Resume waits for its end in the same way.
func TestPauseAndResumeAreRefusedDuringACheckpoint(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("FAKE_DIR", dir)
	rt, _ := fakeRuntime(t, dir, `
checkpoint) touch "$FAKE_DIR/dumping"; while [ ! -e "$FAKE_DIR/go" ]; do sleep 0.01; done; rm -f "$FAKE_DIR/go" "$FAKE_DIR/dumping"; exit 0;;
pause|resume) exit 0;;`)
	c := &Container{ID: "c", Bundle: dir, rt: rt, execs: map[string]*Process{}}
	c.execsIdle = sync.NewCond(&c.mu)
	c.init = newProcess(c, "", shimio.Config{}, nil)
	c.init.pid, c.init.status = os.Getpid(), Running
	ctx := context.Background()

	during := func(what string, op func() error) {
		t.Helper()
		done := make(chan error, 1)
		go func() {
			done <- c.Checkpoint(ctx, oci.CheckpointOpts{ImagePath: filepath.Join(dir, "img"), WorkPath: filepath.Join(dir, "work"), LeaveRunning: true}, nil)
		}()
		awaitCheckpointBegun(t, dir)
		if err := op(); !errdefs.IsFailedPrecondition(err) {
			t.Errorf("%s during a checkpoint: %v, want FailedPrecondition", what, err)
		}
		if err := os.WriteFile(filepath.Join(dir, "go"), nil, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := <-done; err != nil {
			t.Fatalf("checkpoint: %v", err)
		}
		if err := op(); err != nil {
			t.Errorf("%s after the checkpoint: %v", what, err)
		}
	}
	during("Pause", func() error { return c.Pause(ctx, nil) })
	if st := c.init.State().Status; st != Paused {
		t.Fatalf("after Pause: %v, want paused", st)
	}
	during("Resume", func() error { return c.Resume(ctx, nil) })
	if st := c.init.State().Status; st != Running {
		t.Fatalf("after Resume: %v, want running", st)
	}
}

// A checkpoint that leaves the container running holds no exit back: an
// init that ends by itself meanwhile is reported at once, not when the
// checkpoint is over (up to 5 s later).
func TestExitDuringALeaveRunningCheckpointIsNotHeld(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("FAKE_DIR", dir)
	rt, r := fakeRuntime(t, dir, `
checkpoint) touch "$FAKE_DIR/dumping"; while [ ! -e "$FAKE_DIR/go" ]; do sleep 0.01; done; exit 0;;`)
	exited := make(chan struct{})
	c := &Container{ID: "c", Bundle: dir, rt: rt, ownPIDNS: true, execs: map[string]*Process{},
		events: Events{Exited: func(*Process, Snapshot) { close(exited) }}}
	c.execsIdle = sync.NewCond(&c.mu)
	c.init = newProcess(c, "", shimio.Config{}, nil)
	cmd := runSleepingInit(t, c, r)

	done := make(chan error, 1)
	go func() {
		done <- c.Checkpoint(context.Background(), oci.CheckpointOpts{ImagePath: filepath.Join(dir, "img"), LeaveRunning: true}, nil)
	}()
	t.Cleanup(func() {
		_ = os.WriteFile(filepath.Join(dir, "go"), nil, 0o600)
		<-done
	})
	awaitCheckpointBegun(t, dir)
	_ = cmd.Process.Kill()
	select {
	case <-exited:
	case <-time.After(3 * time.Second):
		t.Fatal("the init's exit was held back by a checkpoint that leaves the container running")
	}
}

// runSleepingInit starts a sleep under r as c's running init, its exit
// reported as an init's (initExited), and kills it at the test's end.
func runSleepingInit(t *testing.T, c *Container, r *reaper.Reaper) *exec.Cmd {
	t.Helper()
	cmd := exec.Command("sleep", "100")
	exitc, err := r.Start(cmd)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	c.init.pid, c.init.status = cmd.Process.Pid, Running
	r.Then(cmd.Process.Pid, exitc, c.initExited)
	return cmd
}

// awaitCheckpointBegun waits for the fake runtime's checkpoint to mark
// itself under way (the file "dumping" in dir).
func awaitCheckpointBegun(t *testing.T, dir string) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		if _, err := os.Stat(filepath.Join(dir, "dumping")); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the checkpoint never began")
		}
	}
}

// CRIU freezes the container for its dump, as a Pause does: an exec the
// runtime is launching then would be frozen half-way and dumped so. A
// checkpoint waits for the launches under way before it calls the runtime,
// and an exec started during a checkpoint is refused (FailedPrecondition).
func TestCheckpointAndExecLaunchesKeepApart(t *testing.T) {
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		t.Skipf("cannot become a subreaper: %v", err)
	}
	dir := t.TempDir()
	t.Setenv("FAKE_DIR", dir)
	rt, r := fakeRuntime(t, dir, `
checkpoint) touch "$FAKE_DIR/dumping"; while [ ! -e "$FAKE_DIR/go" ]; do sleep 0.01; done; exit 0;;
exec) touch "$FAKE_DIR/begun"; while [ ! -e "$FAKE_DIR/go-exec" ]; do sleep 0.01; done
	while [ "$1" != --pid-file ]; do shift; done; sleep 100 </dev/null >/dev/null 2>&1 & echo $! > "$2";;`)
	c := &Container{ID: "c", Bundle: dir, rt: rt, ownPIDNS: true, execs: map[string]*Process{}}
	c.execsIdle = sync.NewCond(&c.mu)
	c.init = newProcess(c, "", shimio.Config{}, nil)
	runSleepingInit(t, c, r)
	newExec := func(id string) *Process {
		e := newProcess(c, id, shimio.Config{}, nil)
		e.execSpec = []byte(`{"args":["sleep","100"]}`)
		c.mu.Lock()
		c.execs[id] = e
		c.mu.Unlock()
		t.Cleanup(func() {
			if pid := e.Pid(); pid > 0 {
				_ = unix.Kill(pid, unix.SIGKILL)
			}
		})
		return e
	}
	exists := func(name string) bool {
		_, err := os.Stat(filepath.Join(dir, name))
		return err == nil
	}
	release := func(name string) {
		if err := os.WriteFile(filepath.Join(dir, name), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	checkpointDone := make(chan error, 1)
	t.Cleanup(func() {
		release("go")
		release("go-exec")
	})

	launched := make(chan error, 1)
	go func() { launched <- newExec("e1").startExec(context.Background(), func(int) {}) }()
	waitUntil(t, "the runtime's exec begins", func() bool { return exists("begun") })
	go func() {
		checkpointDone <- c.Checkpoint(context.Background(), oci.CheckpointOpts{ImagePath: filepath.Join(dir, "img"), WorkPath: filepath.Join(dir, "work"), LeaveRunning: true}, nil)
	}()
	time.Sleep(300 * time.Millisecond)
	if exists("dumping") {
		t.Fatal("the checkpoint called the runtime while an exec was being launched")
	}
	release("go-exec")
	if err := <-launched; err != nil {
		t.Fatalf("the exec launched before the checkpoint: %v", err)
	}
	awaitCheckpointBegun(t, dir)

	if err := newExec("e2").startExec(context.Background(), func(int) {}); !errdefs.IsFailedPrecondition(err) {
		t.Fatalf("an exec started during the checkpoint: %v, want FailedPrecondition", err)
	}
	release("go")
	if err := <-checkpointDone; err != nil {
		t.Fatalf("checkpoint: %v", err)
	}
	if err := newExec("e3").startExec(context.Background(), func(int) {}); err != nil {
		t.Fatalf("an exec after the checkpoint: %v", err)
	}
}
