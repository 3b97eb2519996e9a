package proctree

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/example/containerd-shim-example-v2/internal/procstat"
)

// startTree starts `sh` running two background sleeps and prints their pids.
func startTree(t *testing.T) (*exec.Cmd, []int) {
	t.Helper()
	cmd := exec.Command("sh", "-c", `sleep 60 & echo $!; sleep 60 & echo $!; wait`)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	sc := bufio.NewScanner(out)
	var pids []int
	for len(pids) < 2 && sc.Scan() {
		pid, err := strconv.Atoi(strings.TrimSpace(sc.Text()))
		if err != nil {
			t.Fatalf("child said %q", sc.Text())
		}
		pids = append(pids, pid)
	}
	if len(pids) < 2 {
		t.Fatalf("the child printed %d pids", len(pids))
	}
	return cmd, pids
}

// In the caller's pid namespace a container is its init, its execs and their
// descendants; nothing else (the test process, its other children).
func TestOfSharedPidNamespaceIsTheDescendants(t *testing.T) {
	sh, sleeps := startTree(t)
	other := exec.Command("sleep", "60") // another child of the caller: not the container's
	if err := other.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = other.Process.Kill(); _ = other.Wait() }()
	exec1 := exec.Command("sleep", "60") // an exec: listed, as a root given
	if err := exec1.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = exec1.Process.Kill(); _ = exec1.Wait() }()

	procs, err := Of(sh.Process.Pid, Known{Execs: []int{exec1.Process.Pid}})
	if err != nil {
		t.Fatal(err)
	}
	got := pidsOf(t, procs)
	want := append([]int{sh.Process.Pid, exec1.Process.Pid}, sleeps...)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("Of = %v, want %v (sh, the exec and the two sleeps; not %d, not %d)", got, want, other.Process.Pid, os.Getpid())
	}
}

// sessionLeader starts a session leader whose child left a sleep behind
// (orphaned, reparented to the nearest subreaper) and which then goes on as
// a sleep of its own; it returns the leader and the orphan's pid.
func sessionLeader(t *testing.T) (*exec.Cmd, int) {
	t.Helper()
	cmd := exec.Command("sh", "-c", `sh -c 'sleep 60 & echo $!'; exec sleep 60`)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	return cmd, startLeaving(t, cmd)
}

// startLeaving starts cmd, a script that prints the pid of a process it left
// behind and then goes on as a sleep, and returns that pid once cmd has come
// to its sleep (the left one's parent has exited by then). Both are killed
// at the test's end.
func startLeaving(t *testing.T, cmd *exec.Cmd) int {
	t.Helper()
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(out)
	if !sc.Scan() {
		t.Fatalf("%v printed no pid", cmd.Args)
	}
	left, err := strconv.Atoi(strings.TrimSpace(sc.Text()))
	if err != nil {
		t.Fatalf("%v said %q", cmd.Args, sc.Text())
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		_ = syscall.Kill(left, syscall.SIGKILL)
		// A child of this process when it is a subreaper: reaped here.
		var ws syscall.WaitStatus
		_, _ = syscall.Wait4(left, &ws, 0, nil)
	})
	awaitSleep(t, cmd.Process.Pid)
	return left
}

// awaitSleep waits until pid runs sleep: a script that ends in `exec
// sleep` after its other commands is then done with them.
func awaitSleep(t *testing.T, pid int) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(2 * time.Millisecond) {
		if comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid)); string(comm) == "sleep\n" {
			return
		}
	}
	t.Fatalf("process %d never came to its sleep", pid)
}

// When the init of a container in a shared pid namespace has exited and
// been reaped, what it left is its orphans (found by the dead init's
// session, recorded at its exit) and the running execs with theirs; not
// another session's processes.
func TestLeftoversOfAReapedInit(t *testing.T) {
	init, initOrphan := sessionLeader(t)
	exec1, execOrphan := sessionLeader(t)
	other, otherOrphan := sessionLeader(t)
	deadInit := init.Process.Pid
	_ = init.Process.Kill()
	_ = init.Wait()
	initSession, err := ExitedSession(deadInit)
	if err != nil {
		t.Fatal(err)
	}

	procs, err := Leftovers(Known{Execs: []int{exec1.Process.Pid}, Exited: []Exited{initSession}})
	if err != nil {
		t.Fatal(err)
	}
	got := pidsOf(t, procs)
	want := []int{initOrphan, exec1.Process.Pid, execOrphan}
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("Leftovers = %v, want %v (the init's orphan, the exec and its orphan; not %d, not %d)", got, want, other.Process.Pid, otherOrphan)
	}
}

// What an exec left in its session when it exited still counts as the
// container's, in Of and in Leftovers, as long as a member recorded at the
// exit is in the session; once none is, the record is Gone.
func TestExitedSessionCountsWhileAMemberIsLeft(t *testing.T) {
	init, _ := sessionLeader(t)
	exec1, execOrphan := sessionLeader(t)
	_, otherOrphan := sessionLeader(t) // another container's: not listed
	dead := exec1.Process.Pid
	_ = exec1.Process.Kill()
	_ = exec1.Wait()

	e, err := ExitedSession(dead)
	if err != nil {
		t.Fatal(err)
	}
	if got := pidsOf(t, e.Members); !slices.Equal(got, []int{execOrphan}) {
		t.Fatalf("ExitedSession(%d) members %v, want the exec's orphan %d", dead, got, execOrphan)
	}
	if e.Gone() {
		t.Fatal("Gone with the exec's orphan still in its session")
	}
	procs, err := Of(init.Process.Pid, Known{Exited: []Exited{e}})
	if err != nil {
		t.Fatal(err)
	}
	if got := pidsOf(t, procs); !slices.Contains(got, execOrphan) || slices.Contains(got, otherOrphan) {
		t.Errorf("Of = %v: want the exited exec's orphan %d, not %d", got, execOrphan, otherOrphan)
	}
	procs, err = Leftovers(Known{Exited: []Exited{e}})
	if err != nil {
		t.Fatal(err)
	}
	if got := pidsOf(t, procs); !slices.Contains(got, execOrphan) {
		t.Errorf("Leftovers = %v: want the exited exec's orphan %d", got, execOrphan)
	}

	// A record whose members are gone (here: another start time under the
	// orphan's number) no longer speaks for the session.
	stale := Exited{Session: dead, Members: []Proc{{Pid: execOrphan, Start: e.Members[0].Start + 1}}}
	if !stale.Gone() {
		t.Error("a record of no live member is not Gone")
	}
	procs, err = Of(init.Process.Pid, Known{Exited: []Exited{stale}})
	if err != nil {
		t.Fatal(err)
	}
	if got := pidsOf(t, procs); slices.Contains(got, execOrphan) {
		t.Errorf("Of = %v: lists %d through a record that is Gone", got, execOrphan)
	}
}

// crun starts an exec as the child of a short-lived session leader, so the
// exec's session is not its PID: what it leaves is found by its session
// while it runs (Of) and once it has exited (SessionOf, noted while it ran,
// then ExitedSession and Leftovers).
func TestSessionOfAnExecWhoseLeaderExited(t *testing.T) {
	dir := t.TempDir()
	execScript := filepath.Join(dir, "exec.sh")
	if err := os.WriteFile(execScript, []byte("sh -c 'sleep 60 & echo orphan $!'\nexec sleep 61\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	leader := exec.Command("sh", "-c", "sh "+execScript+" & echo exec $!")
	leader.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	out, err := leader.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := leader.Start(); err != nil {
		t.Fatal(err)
	}
	pids := map[string]int{}
	sc := bufio.NewScanner(out)
	for len(pids) < 2 && sc.Scan() {
		what, n, _ := strings.Cut(sc.Text(), " ")
		pid, err := strconv.Atoi(n)
		if err != nil {
			t.Fatalf("the scripts said %q", sc.Text())
		}
		pids[what] = pid
	}
	execPid, orphan := pids["exec"], pids["orphan"]
	t.Cleanup(func() {
		_ = syscall.Kill(execPid, syscall.SIGKILL)
		_ = syscall.Kill(orphan, syscall.SIGKILL)
	})
	if execPid == 0 || orphan == 0 {
		t.Fatalf("the scripts said %v", pids)
	}
	session := leader.Process.Pid
	_ = leader.Wait() // the leader is gone; its session lives on in the exec

	if got := SessionOf(execPid); got != session {
		t.Fatalf("SessionOf(exec %d) = %d, want its dead leader's %d", execPid, got, session)
	}
	awaitSleep(t, execPid) // the orphan's parent has exited
	procs, err := Of(execPid, Known{})
	if err != nil {
		t.Fatal(err)
	}
	if got := pidsOf(t, procs); !slices.Equal(got, sorted(execPid, orphan)) {
		t.Errorf("Of = %v, want the exec and its orphan %v", got, sorted(execPid, orphan))
	}

	_ = syscall.Kill(execPid, syscall.SIGKILL)
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if st, err := procstat.Read(execPid); err != nil || st.Exiting() {
			break
		}
	}
	e, err := ExitedSession(session)
	if err != nil {
		t.Fatal(err)
	}
	procs, err = Leftovers(Known{Exited: []Exited{e}})
	if err != nil {
		t.Fatal(err)
	}
	if got := pidsOf(t, procs); !slices.Contains(got, orphan) {
		t.Errorf("Leftovers = %v, want the exited exec's orphan %d", got, orphan)
	}
}

// SessionOf takes a process already reaped (an exec that exited as soon as
// it started) for the leader of its own session, as runc starts each; the
// caller's own session is none of the container's.
func TestSessionOfAGoneProcessAndOfTheCallersOwn(t *testing.T) {
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	if got := SessionOf(cmd.Process.Pid); got != cmd.Process.Pid {
		t.Errorf("SessionOf(reaped %d) = %d, want its own number", cmd.Process.Pid, got)
	}
	if got := SessionOf(os.Getpid()); got != 0 {
		t.Errorf("SessionOf(the caller) = %d, want 0", got)
	}
}

// sorted is pids in order.
func sorted(pids ...int) []int {
	slices.Sort(pids)
	return pids
}

// pidsOf is the numbers of procs, each checked to carry its process's start
// time.
func pidsOf(t *testing.T, procs []Proc) []int {
	t.Helper()
	var pids []int
	for _, p := range procs {
		if st, err := procstat.Read(p.Pid); err != nil || st.Start != p.Start {
			t.Errorf("%d: start time %d, /proc has %+v (%v)", p.Pid, p.Start, st, err)
		}
		pids = append(pids, p.Pid)
	}
	return pids
}

// Signal hits the process a scan found, not one with another start time
// under its number (a process that took the number after the one found was
// reaped), nor a number nobody holds.
func TestSignalHitsOnlyTheProcessFound(t *testing.T) {
	cmd := exec.Command("sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	st, err := procstat.Read(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	found := Proc{Pid: cmd.Process.Pid, Start: st.Start}

	if err := (Proc{Pid: found.Pid, Start: found.Start + 1}).Signal(unix.SIGKILL); !errors.Is(err, ErrGone) {
		t.Errorf("a signal for another start time under the number: %v, want ErrGone", err)
	}
	if st, err := procstat.Read(found.Pid); err != nil || st.Exiting() {
		t.Fatalf("the process was hit by a signal meant for another: %+v, %v", st, err)
	}
	if err := found.Signal(unix.SIGKILL); err != nil {
		t.Fatalf("Signal of the process found: %v", err)
	}
	if err := cmd.Wait(); err == nil || cmd.ProcessState.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Errorf("the process found ended with %v, want killed by SIGKILL", err)
	}
	if err := found.Signal(unix.SIGKILL); !errors.Is(err, ErrGone) {
		t.Errorf("a signal to a reaped process's number: %v, want ErrGone", err)
	}
}

// A process whose parent died (reparented to a subreaper, or to the host's or
// a pod's init) is found by its session: runc starts the init and each exec
// as session leaders. Not the members of another session.
func TestOfSharedPidNamespaceFindsOrphansBySession(t *testing.T) {
	init, initOrphan := sessionLeader(t)
	exec1, execOrphan := sessionLeader(t)
	other, otherOrphan := sessionLeader(t) // another container's: not listed
	for _, pid := range []int{initOrphan, execOrphan} {
		if st, err := procstat.Read(pid); err != nil || st.Ppid == init.Process.Pid || st.Ppid == exec1.Process.Pid {
			t.Fatalf("the orphan %d is not one: %+v, %v", pid, st, err)
		}
	}

	procs, err := Of(init.Process.Pid, Known{Execs: []int{exec1.Process.Pid}})
	if err != nil {
		t.Fatal(err)
	}
	got := pidsOf(t, procs)
	want := []int{init.Process.Pid, initOrphan, exec1.Process.Pid, execOrphan}
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("Of = %v, want %v (the init, the exec and their orphans; not %d, not %d)", got, want, other.Process.Pid, otherOrphan)
	}
}

// A container with a pid namespace of its own is every process in it.
func TestOfOwnPidNamespaceIsTheNamespace(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("a pid namespace needs root")
	}
	// unshare forks the namespace's init (sh), whose sleeps are its children;
	// the pids they would print are the namespace's, so they are found by parent.
	cmd := exec.Command("unshare", "--pid", "--fork", "--kill-child", "sh", "-c", "sleep 60 & sleep 60 & wait")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	var init int
	var sleeps []int
	deadline := time.Now().Add(5 * time.Second)
	for len(sleeps) < 2 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
		if in := childrenOf(cmd.Process.Pid); len(in) == 1 {
			init, sleeps = in[0], childrenOf(in[0])
		}
	}
	if len(sleeps) != 2 {
		t.Fatalf("the namespace's init %d has children %v, want two sleeps", init, sleeps)
	}
	procs, err := Of(init, Known{})
	if err != nil {
		t.Fatal(err)
	}
	got := pidsOf(t, procs)
	want := append([]int{init}, sleeps...)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("Of = %v, want %v (the namespace's init and its two sleeps, not unshare %d)", got, want, cmd.Process.Pid)
	}
}

// A process that joined another's pid namespace (a pod's shared one) is not
// the namespace: it is its own descendants.
func TestOfJoinedPidNamespaceIsTheDescendants(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("a pid namespace needs root")
	}
	pod := exec.Command("unshare", "--pid", "--fork", "--kill-child", "sleep", "60")
	if err := pod.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = pod.Process.Kill(); _ = pod.Wait() }()
	var podInit []int
	for deadline := time.Now().Add(5 * time.Second); len(podInit) != 1 && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
		podInit = childrenOf(pod.Process.Pid)
	}
	if len(podInit) != 1 {
		t.Fatalf("the pod's init not found: %v", podInit)
	}
	// nsenter forks the joined process (sh) into the pod's namespace.
	joined := exec.Command("nsenter", "--target", strconv.Itoa(podInit[0]), "--pid", "--", "sh", "-c", "sleep 60 & wait")
	if err := joined.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = joined.Process.Kill(); _ = joined.Wait() }()
	var sh, sleep []int
	for deadline := time.Now().Add(5 * time.Second); len(sleep) != 1 && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
		if sh = childrenOf(joined.Process.Pid); len(sh) == 1 {
			sleep = childrenOf(sh[0])
		}
	}
	if len(sleep) != 1 {
		t.Fatalf("the joined sh %v has children %v, want one sleep", sh, sleep)
	}
	procs, err := Of(sh[0], Known{})
	if err != nil {
		t.Fatal(err)
	}
	got := pidsOf(t, procs)
	want := []int{sh[0], sleep[0]}
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("Of = %v, want %v (the joined sh and its sleep, not the pod's init %d)", got, want, podInit[0])
	}
}

// childrenOf lists pid's children.
func childrenOf(pid int) []int {
	entries, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range entries {
		if p, err := strconv.Atoi(e.Name()); err == nil {
			if st, err := procstat.Read(p); err == nil && st.Ppid == pid {
				out = append(out, p)
			}
		}
	}
	return out
}

// mountNSInit starts a process in a mount namespace of its own (a container's
// init) that left a daemon behind: a process in a session of its own whose
// parent has exited. It returns the init and the daemon's pid.
func mountNSInit(t *testing.T) (*exec.Cmd, int) {
	t.Helper()
	cmd := exec.Command("unshare", "--mount", "--propagation", "private", "sh", "-c", `(setsid sleep 60 & echo $!); exec sleep 60`)
	daemon := startLeaving(t, cmd)
	awaitSleep(t, daemon)
	return cmd, daemon
}

// A process that started a session of its own and whose parent died is
// found by the container's mount namespace, in Of and in Leftovers (after
// the init was reaped); not a process of another mount namespace, nor the
// caller's. Without the namespace it is missed.
func TestMountNamespaceFindsADaemon(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("a mount namespace needs root")
	}
	init, daemon := mountNSInit(t)
	other, otherDaemon := mountNSInit(t) // another container's
	if st, err := procstat.Read(daemon); err != nil || st.Session != daemon || st.Ppid == init.Process.Pid {
		t.Fatalf("the daemon %d is not one (a session of its own, its parent gone): %+v, %v", daemon, st, err)
	}
	if m, err := OpenMountNS(os.Getpid()); m != nil || err != nil {
		t.Errorf("OpenMountNS(the caller) = %v, %v; want nil, nil", m, err)
	}
	m, err := OpenMountNS(init.Process.Pid)
	if err != nil || m == nil {
		t.Fatalf("OpenMountNS(init) = %v, %v", m, err)
	}
	defer m.Close()

	procs, err := Of(init.Process.Pid, Known{})
	if err != nil {
		t.Fatal(err)
	}
	if got := pidsOf(t, procs); !slices.Equal(got, []int{init.Process.Pid}) {
		t.Errorf("Of without the namespace = %v, want only the init %d", got, init.Process.Pid)
	}
	procs, err = Of(init.Process.Pid, Known{Mounts: m})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := pidsOf(t, procs), sorted(init.Process.Pid, daemon); !slices.Equal(got, want) {
		t.Errorf("Of = %v, want %v (the init and its daemon; not %d, not %d)", got, want, other.Process.Pid, otherDaemon)
	}

	_ = init.Process.Kill()
	_ = init.Wait()
	procs, err = Leftovers(Known{Mounts: m})
	if err != nil {
		t.Fatal(err)
	}
	if got := pidsOf(t, procs); !slices.Equal(got, []int{daemon}) {
		t.Errorf("Leftovers after the init's exit = %v, want the daemon %d", got, daemon)
	}
}
