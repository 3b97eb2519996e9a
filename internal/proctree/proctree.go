// Package proctree lists a container's processes from /proc, for a container
// that has no cgroup of its own to list them from (the runtime's `ps` reads
// the cgroup, and fails without one: rootless containers on cgroup v1, or on
// v2 without a delegated cgroup), and what such a container left running
// when its init exited (the runtime's `kill --all` reads the cgroup too);
// and signals what it found, named by number and start time (Proc).
package proctree

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"

	"golang.org/x/sys/unix"

	"github.com/example/containerd-shim-example-v2/internal/procstat"
)

// Of lists the processes of the container whose init is init: every process
// in init's pid namespace when init is that namespace's pid 1 (a container
// with a pid namespace of its own, where orphans are reparented to its init);
// otherwise (the host's namespace, or a pod's that the container joined) init
// and what k knows (Known.members), with all their descendants. Sorted by
// PID; init first is not promised. Each comes with its start time (see Proc).
func Of(init int, k Known) ([]Proc, error) {
	initNS, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", init))
	if err != nil {
		return nil, fmt.Errorf("pid namespace of %d: %w", init, err)
	}
	ownsNS, err := firstInNamespace(init)
	if err != nil {
		return nil, err
	}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	if ownsNS {
		var pids []int
		for _, e := range entries {
			if pid, err := strconv.Atoi(e.Name()); err == nil {
				pids = append(pids, pid)
			}
		}
		var procs []Proc
		for _, pid := range inNamespace(pids, "pid", initNS) {
			// A process gone meanwhile has no stat: it is not listed.
			if st, err := procstat.Read(pid); err == nil {
				procs = append(procs, Proc{Pid: pid, Start: st.Start})
			}
		}
		slices.SortFunc(procs, func(a, b Proc) int { return a.Pid - b.Pid })
		return procs, nil
	}
	t := scan(entries)
	return t.procs(t.walk(k.members(t, init)), func(procstat.Stat) bool { return true }), nil
}

// Leftovers lists what a container in a pid namespace it shares left
// running when its init exited: what k knows (Known.members), and all their
// descendants; processes exiting already, or not found by the scan, are left
// out. Each comes with its start time, so that Signal hits the process the
// scan found and no later holder of its number.
func Leftovers(k Known) ([]Proc, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	t := scan(entries)
	return t.procs(t.walk(k.members(t)), func(st procstat.Stat) bool { return !st.Exiting() }), nil
}

// Known is what the shim knows of a container in a pid namespace it shares,
// beside its init, to find its processes by.
type Known struct {
	Execs  []int    // its running execs
	Exited []Exited // what its exited init and execs left in their sessions
	Mounts *MountNS // its mount namespace; nil when it has none of its own
}

// members lists the roots given (the init, where it runs), k's running
// execs, the members of their sessions and of the sessions k.Exited keeps,
// and the processes in k.Mounts. The sessions find a process whose parent
// died, reparented to the shim (the subreaper) or to the pod's init: runc
// starts the init and each exec as a session leader, crun the init and each
// exec's short-lived parent, and a process keeps its session when its
// parent dies. The caller's own session is never taken (a runtime that
// started none would leave the container's processes in it). The mount
// namespace finds what the sessions miss: a process that started a session
// of its own (a daemon), or whose exec's session was not read in time; every
// process of the container is in it but one that made a namespace of its
// own, which its descent or session still finds.
func (k Known) members(t tree, roots ...int) []int {
	out := append(t.withSessions(slices.Concat(roots, k.Execs)), t.ofExited(k.Exited)...)
	return append(out, t.inMountNS(k.Mounts)...)
}

// Exited is what an exited init or exec left in its session (SessionOf,
// noted while it ran): the session's number, and its members at the exit.
// The kernel keeps a session's number from reuse while the session has a
// member, so as long as one of these is still in it, every member the
// session has is the container's (a process forked since, or orphaned
// since, as well); once none is, the number may be a new process's, and the
// record is done with (Gone).
type Exited struct {
	Session int    `json:"session"`
	Members []Proc `json:"members"` // an upgrade hands records over as JSON
}

// ExitedSession records what is left in session, that of an init or exec
// that has exited; no Members when nothing is.
func ExitedSession(session int) (Exited, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return Exited{}, err
	}
	t := scan(entries)
	return Exited{Session: session, Members: t.procs(t.sessions[session], func(procstat.Stat) bool { return true })}, nil
}

// SessionOf is the session pid is in, or 0 when that is the caller's own
// (a runtime that started no session for the process left it in the
// shim's, which is not the container's). A process gone already (one that
// exits as soon as it starts may be reaped before this reads it) is taken
// to have led its own, as runc starts each: pid.
func SessionOf(pid int) int {
	st, err := procstat.Read(pid)
	if err != nil {
		return pid
	}
	own, err := unix.Getsid(0)
	if err != nil || st.Session == own {
		return 0
	}
	return st.Session
}

// Gone reports that none of e's members is still in its session: e no
// longer tells whose the session's number is.
func (e Exited) Gone() bool {
	for _, m := range e.Members {
		if st, err := procstat.Read(m.Pid); err == nil && e.stillIn(m, st) {
			return false
		}
	}
	return true
}

// stillIn reports whether the member m, whose stat now is st, is still in
// e's session.
func (e Exited) stillIn(m Proc, st procstat.Stat) bool {
	return m.is(st) && st.Session == e.Session
}

// ofExited lists the members of those sessions of exited that a member
// recorded at the exit is still in (see Exited).
func (t tree) ofExited(exited []Exited) []int {
	var out []int
	for _, e := range exited {
		if slices.ContainsFunc(e.Members, func(m Proc) bool {
			st, found := t.stat[m.Pid]
			return found && e.stillIn(m, st)
		}) {
			out = append(out, t.sessions[e.Session]...)
		}
	}
	return out
}

// Proc is a process as a scan found it: its number, and its start time,
// which tells it from a process given the number after it was reaped.
type Proc struct {
	Pid   int    `json:"pid"`
	Start uint64 `json:"start"` // procstat.Stat.Start
}

// ErrGone answers Signal for a process that is gone, or whose number
// another process holds now.
var ErrGone = errors.New("process gone")

// Signal sends sig to p if p is still there. The number is pinned first
// with a pidfd, then checked to have p's start time, and the signal goes
// through the pidfd: a process that exited and was reaped after the scan
// (the shim's reaper reaps its orphans at any moment) and whose number a new
// process took is not hit. Without pidfds (kernels before 5.3) the check
// comes just before a kill(2), which narrows the window without closing it.
func (p Proc) Signal(sig unix.Signal) error {
	fd, err := unix.PidfdOpen(p.Pid, 0)
	if errors.Is(err, unix.ENOSYS) {
		if !p.there() {
			return ErrGone
		}
		return unix.Kill(p.Pid, sig)
	}
	if errors.Is(err, unix.ESRCH) {
		return ErrGone
	}
	if err != nil {
		return fmt.Errorf("pidfd of %d: %w", p.Pid, err)
	}
	defer unix.Close(fd)
	if !p.there() {
		return ErrGone
	}
	return unix.PidfdSendSignal(fd, sig, nil, 0)
}

// there reports whether p's number is held by p.
func (p Proc) there() bool {
	st, err := procstat.Read(p.Pid)
	return err == nil && p.is(st)
}

// is reports whether st, read under p's number, is p's (its start time).
func (p Proc) is(st procstat.Stat) bool { return st.Start == p.Start }

// MountNS is a container's mount namespace, held open. The kernel gives a
// freed namespace's number to the next namespace made (the lowest free
// one), so a number alone could name another container's namespace by the
// time a scan looks, just after the last of this container's processes
// left; the hold keeps the namespace, and its number, the container's.
type MountNS struct {
	fd int
	id string // as a /proc/<pid>/ns/mnt link reads
}

// OpenMountNS holds the mount namespace pid is in; nil, and no error, when
// that is the caller's own (a container that made none: every process of the
// caller's would be in it).
func OpenMountNS(pid int) (*MountNS, error) {
	fd, err := unix.Open(fmt.Sprintf("/proc/%d/ns/mnt", pid), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("mount namespace of %d: %w", pid, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("mount namespace of %d: %w", pid, err)
	}
	id := fmt.Sprintf("mnt:[%d]", st.Ino)
	if own, err := os.Readlink("/proc/self/ns/mnt"); err != nil || own == id {
		unix.Close(fd)
		return nil, err
	}
	return &MountNS{fd: fd, id: id}, nil
}

// Close lets the namespace go. A nil m is closed already.
func (m *MountNS) Close() {
	if m != nil && m.fd >= 0 {
		unix.Close(m.fd)
		m.fd = -1
	}
}

// inMountNS lists the processes of the scan in m, but the caller; none for
// a nil m.
func (t tree) inMountNS(m *MountNS) []int {
	if m == nil {
		return nil
	}
	self := os.Getpid()
	var pids []int
	for pid := range t.stat {
		if pid != self {
			pids = append(pids, pid)
		}
	}
	return inNamespace(pids, "mnt", m.id)
}

// inNamespace lists those of pids whose namespace of kind ("pid", "mnt")
// is id, as its /proc/<pid>/ns/<kind> link reads: one link read per
// process. A process gone meanwhile has no link: it is not listed.
func inNamespace(pids []int, kind, id string) []int {
	var out []int
	for _, pid := range pids {
		if ns, err := os.Readlink("/proc/" + strconv.Itoa(pid) + "/ns/" + kind); err == nil && ns == id {
			out = append(out, pid)
		}
	}
	return out
}

// tree is the processes of /proc as one scan found them.
type tree struct {
	stat     map[int]procstat.Stat
	children map[int][]int
	sessions map[int][]int // session -> its members but the leader
}

// scan reads the stat of every process among entries (/proc's).
func scan(entries []os.DirEntry) tree {
	t := tree{stat: map[int]procstat.Stat{}, children: map[int][]int{}, sessions: map[int][]int{}}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		// A process gone meanwhile is not listed.
		if st, err := procstat.Read(pid); err == nil {
			t.stat[pid] = st
			t.children[st.Ppid] = append(t.children[st.Ppid], pid)
			if st.Session != pid {
				t.sessions[st.Session] = append(t.sessions[st.Session], pid)
			}
		}
	}
	return t
}

// withSessions is roots and the members of their sessions (by the scan),
// but the scanning process's own session.
func (t tree) withSessions(roots []int) []int {
	own := t.stat[os.Getpid()].Session // 0, never a session, if not found
	out := slices.Clone(roots)
	seen := map[int]bool{own: true, 0: true}
	for _, r := range roots {
		st, found := t.stat[r]
		if !found || seen[st.Session] {
			continue
		}
		seen[st.Session] = true
		out = append(out, t.sessions[st.Session]...)
	}
	return out
}

// procs is those of pids that the scan found and keep accepts, in order.
func (t tree) procs(pids []int, keep func(procstat.Stat) bool) []Proc {
	var out []Proc
	for _, pid := range pids {
		if st, found := t.stat[pid]; found && keep(st) {
			out = append(out, Proc{Pid: pid, Start: st.Start})
		}
	}
	return out
}

// walk lists start and every descendant of theirs that the scan found,
// sorted, each once.
func (t tree) walk(start []int) []int {
	var pids []int
	seen := make(map[int]bool)
	queue := slices.Clone(start)
	for len(queue) > 0 {
		pid := queue[0]
		queue = queue[1:]
		if pid <= 0 || seen[pid] {
			continue
		}
		seen[pid] = true
		pids = append(pids, pid)
		queue = append(queue, t.children[pid]...)
	}
	slices.Sort(pids)
	return pids
}

// firstInNamespace reports whether pid is pid 1 of its innermost pid
// namespace (the last number of its NSpid line), which makes the namespace its
// own; the host's init is pid 1 of the host's, which no container's init is.
func firstInNamespace(pid int) (bool, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return false, fmt.Errorf("status of %d: %w", pid, err)
	}
	for _, line := range bytes.Split(data, []byte("\n")) {
		if rest, ok := bytes.CutPrefix(line, []byte("NSpid:")); ok {
			f := bytes.Fields(rest)
			return len(f) > 1 && string(f[len(f)-1]) == "1", nil
		}
	}
	return false, fmt.Errorf("status of %d: no NSpid line", pid)
}
