package reaper

import (
	"context"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// run starts a reaper for the test; it has stopped when the test ends, so
// that no later test's child is reaped by it.
func run(t *testing.T) *Reaper {
	t.Helper()
	r := New()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	t.Cleanup(func() { cancel(); <-done })
	go func() { defer close(done); r.Run(ctx) }()
	return r
}

// A reaper whose context has ended takes no exit, even when its Run only
// begins afterwards (a goroutine scheduled late): the exit may be another
// reaper's, as when tests run one after another in one process.
func TestEndedReaperReapsNothing(t *testing.T) {
	cmd := exec.Command("/bin/sh", "-c", "exit 4")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := cmd.Process.Pid
	var info unix.Siginfo
	// WNOWAIT: wait until it is a zombie, leaving it one.
	if err := unix.Waitid(unix.P_PID, pid, &info, unix.WEXITED|unix.WNOWAIT, nil); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	New().Run(ctx)
	var ws unix.WaitStatus
	got, err := unix.Wait4(pid, &ws, unix.WNOHANG, nil)
	if err != nil || got != pid || ws.ExitStatus() != 4 {
		t.Fatalf("wait4 after an ended reaper's Run: pid %d (want %d), status %d, %v: the ended reaper took the exit", got, pid, ws.ExitStatus(), err)
	}
}

func waitExit(t *testing.T, ch <-chan Exit) Exit {
	t.Helper()
	select {
	case e := <-ch:
		return e
	case <-time.After(10 * time.Second):
		t.Fatal("no exit delivered")
		return Exit{}
	}
}

func TestStartDeliversExitCodeAndSignal(t *testing.T) {
	r := run(t)
	ch, err := r.Start(exec.Command("/bin/sh", "-c", "exit 7"))
	if err != nil {
		t.Fatal(err)
	}
	if e := waitExit(t, ch); e.Status != 7 || e.Time.IsZero() {
		t.Fatalf("exit %+v, want status 7", e)
	}
	cmd := exec.Command("/bin/sh", "-c", "kill -TERM $$; sleep 5")
	ch, err = r.Start(cmd)
	if err != nil {
		t.Fatal(err)
	}
	if e := waitExit(t, ch); e.Status != 128+int(unix.SIGTERM) {
		t.Fatalf("exit %+v, want 143", e)
	}
}

// A process that dies before its PID is claimed must not be lost: the
// window holds its exit until Claim.
func TestWindowKeepsEarlyExit(t *testing.T) {
	r := run(t)
	w := r.Open()
	cmd := exec.Command("/bin/sh", "-c", "exit 3")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waitKept(t, r, cmd.Process.Pid) // the reaper collects it while nobody has claimed the PID
	ch := w.Claim(cmd.Process.Pid)
	w.Close()
	if e := waitExit(t, ch); e.Status != 3 || e.Pid != cmd.Process.Pid {
		t.Fatalf("exit %+v", e)
	}
}

func TestUnclaimedExitIsCountedAsOrphan(t *testing.T) {
	r := run(t)
	before := r.Orphans()
	cmd := exec.Command("/bin/true")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for r.Orphans() == before && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if r.Orphans() != before+1 {
		t.Fatalf("orphans %d, want %d", r.Orphans(), before+1)
	}
}

func TestManyConcurrentExits(t *testing.T) {
	r := run(t)
	const n = 50
	chans := make([]<-chan Exit, n)
	for i := range chans {
		ch, err := r.Start(exec.Command("/bin/sh", "-c", "exit $0", string(rune('0'+i%10))))
		if err != nil {
			t.Fatal(err)
		}
		chans[i] = ch
	}
	for i, ch := range chans {
		if e := waitExit(t, ch); e.Status != i%10 {
			t.Fatalf("process %d: status %d", i, e.Status)
		}
	}
}

// An exit nobody claims while several launch windows overlap is one orphan,
// counted once when the last window closes.
func TestOverlappingWindowsCountAnOrphanOnce(t *testing.T) {
	r := run(t)
	before := r.Orphans()
	w1, w2 := r.Open(), r.Open()
	cmd := exec.Command("/bin/true")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waitKept(t, r, cmd.Process.Pid)
	w1.Close()
	if got := r.Orphans(); got != before {
		t.Fatalf("orphans %d with a window still open, want %d", got, before)
	}
	w2.Close()
	w2.Close() // idempotent
	if got := r.Orphans(); got != before+1 {
		t.Fatalf("orphans %d after both windows closed, want %d", got, before+1)
	}
}

// A launch window never receives an exit reaped before it opened: that was an
// earlier process with the same PID (PIDs are reused, soon where pid_max is
// 32768), kept because an older window overlapped. The older window still gets
// it, and it is an orphan once no window that may claim it is open. Driven
// through dispatch: the kernel cannot be made to reuse a PID on demand.
func TestWindowIgnoresExitOfReusedPID(t *testing.T) {
	r := New()
	const pid = 1 << 30 // not a real child: dispatch is called directly
	older := r.Open()
	r.dispatch(Exit{Pid: pid, Status: 137}) // the earlier process, nobody claims it
	newer := r.Open()
	ch := newer.Claim(pid) // the new process that got the PID
	select {
	case e := <-ch:
		t.Fatalf("the newer window got %+v, the exit of the PID's earlier process", e)
	default:
	}
	before := r.Orphans()
	older.Close()
	if got := r.Orphans(); got != before+1 {
		t.Fatalf("orphans %d after the older window closed, want %d", got, before+1)
	}
	r.dispatch(Exit{Pid: pid, Status: 3}) // the new process exits
	if e := waitExit(t, ch); e.Status != 3 {
		t.Fatalf("the newer window got %+v, want status 3", e)
	}
	newer.Close()

	// The older window itself may claim it: it opened before that exit.
	older = r.Open()
	r.dispatch(Exit{Pid: pid + 1, Status: 5})
	newer = r.Open()
	if e := waitExit(t, older.Claim(pid+1)); e.Status != 5 {
		t.Fatalf("the older window got %+v, want status 5", e)
	}
	older.Close()
	newer.Close()
	if w, n := r.Watched(); w != 0 || n != 0 || len(r.pending) != 0 {
		t.Fatalf("left: %d waiters, %d windows, %d pending", w, n, len(r.pending))
	}
}

// A PID used twice within overlapping windows, both processes reaped before
// either launcher claims: each window gets its own process's exit, not the
// later one's, and nobody is left waiting for an exit already reaped.
func TestReusedPIDExitsKeptForEachWindow(t *testing.T) {
	r := New()
	const pid = 1 << 30 // not a real child: dispatch is called directly
	first := r.Open()
	r.dispatch(Exit{Pid: pid, Status: 11}) // first's process
	second := r.Open()
	r.dispatch(Exit{Pid: pid, Status: 22}) // second's, given the same PID
	for _, c := range []struct {
		w    *Window
		want int
	}{{second, 22}, {first, 11}} {
		select {
		case e := <-c.w.Claim(pid):
			if e.Status != c.want {
				t.Errorf("claimed status %d, want %d", e.Status, c.want)
			}
		default:
			t.Errorf("the exit with status %d, already reaped, was not delivered", c.want)
		}
	}
	first.Close()
	second.Close()
	if w, n := r.Watched(); w != 0 || n != 0 || len(r.pending) != 0 || r.Orphans() != 0 {
		t.Fatalf("left: %d waiters, %d windows, %d pending, %d orphans", w, n, len(r.pending), r.Orphans())
	}
}

// Then delivers an exit to a function, whether the exit is already there or
// comes later, and no goroutine waits for it meanwhile.
func TestThenRunsOnExit(t *testing.T) {
	r := run(t)
	for _, script := range []string{"exit 5", "sleep 0.3; exit 6"} {
		cmd := exec.Command("/bin/sh", "-c", script)
		ch, err := r.Start(cmd)
		if err != nil {
			t.Fatal(err)
		}
		if script == "exit 5" {
			time.Sleep(200 * time.Millisecond) // reaped before Then
		}
		got := make(chan Exit, 1)
		r.Then(cmd.Process.Pid, ch, func(e Exit) { got <- e })
		e := waitExit(t, got)
		if want := map[string]int{"exit 5": 5, "sleep 0.3; exit 6": 6}[script]; e.Status != want || e.Pid != cmd.Process.Pid {
			t.Fatalf("%s: exit %+v, want status %d", script, e, want)
		}
	}
	if pids, _ := r.Watched(); pids != 0 {
		t.Fatalf("%d claimants left", pids)
	}
}

// While paused (an upgrade in progress), an exit waits as a zombie and is
// delivered, once, after Resume; Pause waits for callbacks still running.
func TestPauseKeepsExitsForLater(t *testing.T) {
	r := run(t)
	if !r.Pause(time.Second) {
		t.Fatal("pause with nothing running did not complete")
	}
	ch, err := r.Start(exec.Command("/bin/sh", "-c", "exit 5"))
	if err != nil {
		t.Fatal(err)
	}
	select {
	case e := <-ch:
		t.Fatalf("exit %+v delivered while paused", e)
	case <-time.After(200 * time.Millisecond):
	}
	r.Resume()
	select {
	case e := <-ch:
		if e.Status != 5 {
			t.Fatalf("status %d, want 5", e.Status)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("exit not delivered after Resume")
	}

	// A callback still running holds Pause until it returns, within the bound.
	release := make(chan struct{})
	cmd := exec.Command("/bin/true")
	ch, err = r.Start(cmd)
	if err != nil {
		t.Fatal(err)
	}
	entered := make(chan struct{})
	r.Then(cmd.Process.Pid, ch, func(Exit) { close(entered); <-release })
	<-entered // the exit arrived and the callback runs
	if r.Pause(50 * time.Millisecond) {
		t.Fatal("pause completed while a callback ran")
	}
	close(release)
	if !r.Pause(time.Second) {
		t.Fatal("pause did not complete after the callback returned")
	}
	r.Resume()
}

// A callback may start a child of its own and wait for its exit (an init's
// exit runs the runtime's kill --all): Pause reaps on until such callbacks
// are done, then pauses, instead of waiting out its bound for an exit it
// would itself hold back.
func TestPauseLetsCallbacksReapTheirChildren(t *testing.T) {
	r := run(t)
	cmd := exec.Command("/bin/true")
	ch, err := r.Start(cmd)
	if err != nil {
		t.Fatal(err)
	}
	started := make(chan struct{})
	entered := make(chan struct{})
	done := make(chan int, 1)
	r.Then(cmd.Process.Pid, ch, func(Exit) {
		close(entered)
		// The child starts only once Pause is under way.
		<-started
		time.Sleep(50 * time.Millisecond)
		kid, err := r.Start(exec.Command("/bin/sh", "-c", "sleep 0.2; exit 7"))
		if err != nil {
			done <- -1
			return
		}
		done <- (<-kid).Status
	})
	<-entered // the exit arrived and the callback waits
	close(started)
	t0 := time.Now()
	if !r.Pause(3 * time.Second) {
		t.Fatal("pause gave up while a callback waited for its own child's exit")
	}
	defer r.Resume()
	select {
	case status := <-done:
		if status != 7 {
			t.Fatalf("the callback's child: status %d, want 7", status)
		}
	default:
		t.Fatal("pause returned while the callback still ran")
	}
	if took := time.Since(t0); took > 2*time.Second {
		t.Fatalf("pause took %v: it waited for its bound, not for the callback", took)
	}
}

// Adopt claims a child started before (an upgrade hands it over): its exit,
// even one that happened before the reaper ran, is delivered once.
func TestAdoptDeliversEarlierExit(t *testing.T) {
	cmd := exec.Command("/bin/sh", "-c", "exit 9")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond) // a zombie by now
	r := New()
	ch := r.Adopt(cmd.Process.Pid)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	defer func() { cancel(); <-done }()
	go func() { defer close(done); r.Run(ctx) }()
	if e := waitExit(t, ch); e.Status != 9 {
		t.Fatalf("status %d, want 9", e.Status)
	}
}

// A child started with a parent-death signal is tethered to its forking
// thread until it is reaped: WhileUntethered refuses meanwhile, and runs its
// function again once the exit is in. A child without one does not count.
func TestWhileUntetheredWaitsForTetheredChildren(t *testing.T) {
	r := run(t)
	ran := func() bool { return r.WhileUntethered(func() {}) }
	if !ran() {
		t.Fatal("refused with no child running")
	}
	plain, err := r.Start(exec.Command("/bin/sh", "-c", "sleep 0.3"))
	if err != nil {
		t.Fatal(err)
	}
	if !ran() {
		t.Fatal("refused while only a child without a parent-death signal runs")
	}
	tied := exec.Command("/bin/sh", "-c", "read x") // exits when stdin closes
	tied.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	in, err := tied.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	ch, err := r.Start(tied)
	if err != nil {
		t.Fatal(err)
	}
	if ran() {
		t.Fatal("ran while a child tied to its forking thread runs")
	}
	in.Close()
	waitExit(t, ch)
	waitExit(t, plain)
	if !ran() {
		t.Fatal("still refused after the tied child was reaped")
	}
}

// A tethered child that exits before Start has claimed it (reaped while the
// launch window was open) leaves nothing tethered.
func TestQuickTetheredExitLeavesNoTether(t *testing.T) {
	r := run(t)
	for i := 0; i < 20; i++ {
		cmd := exec.Command("/bin/true")
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		ch, err := r.Start(cmd)
		if err != nil {
			t.Fatal(err)
		}
		waitExit(t, ch)
	}
	if !r.WhileUntethered(func() {}) {
		t.Fatal("a reaped child is still counted as tethered")
	}
}

// Pidfd opens a pidfd on a claimed process that has not been reaped (it
// names that process), and none once its exit has come: the PID may be
// another process's by then.
func TestPidfdOnlyBeforeTheExit(t *testing.T) {
	r := run(t)
	w := r.Open()
	defer w.Close()
	quick := exec.Command("/bin/sh", "-c", "exit 3")
	if err := quick.Start(); err != nil {
		t.Fatal(err)
	}
	slow := exec.Command("sleep", "100")
	if err := slow.Start(); err != nil {
		t.Fatal(err)
	}
	defer slow.Process.Kill()
	waitKept(t, r, quick.Process.Pid)
	qc := w.Claim(quick.Process.Pid)
	if fd, exited, err := r.Pidfd(quick.Process.Pid, qc); fd != -1 || !exited || err != nil {
		t.Errorf("Pidfd of a process whose exit came: fd %d, exited %v, %v; want -1, true", fd, exited, err)
	}
	if e := waitExit(t, qc); e.Status != 3 {
		t.Errorf("the exit after Pidfd: %+v", e) // Pidfd left it for the claimant
	}
	sc := w.Claim(slow.Process.Pid)
	fd, exited, err := r.Pidfd(slow.Process.Pid, sc)
	if fd < 0 || exited || err != nil {
		t.Fatalf("Pidfd of a running process: fd %d, exited %v, %v", fd, exited, err)
	}
	defer unix.Close(fd)
	if err := unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0); err != nil {
		t.Fatal(err)
	}
	if e := waitExit(t, sc); e.Status != 128+9 {
		t.Errorf("the process killed through the pidfd exited %+v", e)
	}
}

// waitKept waits until r has reaped pid and kept its exit for the open
// windows.
func waitKept(t *testing.T, r *Reaper, pid int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		r.mu.Lock()
		_, seen := r.pending[pid]
		r.mu.Unlock()
		if seen {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the exit was not kept for the open window within 5 s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}
