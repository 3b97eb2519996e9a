package oomlog

import (
	"fmt"
	"testing"

	"golang.org/x/sys/unix"
)

// fakeLog is a kernel log for Log to read: a SOCK_SEQPACKET pair returns one
// record per read and EAGAIN when none is left, as /dev/kmsg does.
type fakeLog struct {
	t      *testing.T
	writer int
	seq    uint64
}

func newFakeLog(t *testing.T) (*Log, *fakeLog) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeLog{t: t, writer: fds[1]}
	l := NewReading(func() (int, error) { return fds[0], nil })
	t.Cleanup(func() { l.Close(); _ = unix.Close(fds[1]) })
	return l, f
}

// log appends a record with the next sequence number.
func (f *fakeLog) log(msg string) uint64 {
	f.t.Helper()
	f.seq++
	rec := fmt.Sprintf("6,%d,%d,-;%s\n SUBSYSTEM=x\n", f.seq, f.seq*1000, msg)
	if _, err := unix.Write(f.writer, []byte(rec)); err != nil {
		f.t.Fatal(err)
	}
	return f.seq
}

func hasPid(pid int) func(Victim) bool { return func(v Victim) bool { return v.Pid == pid } }

func summary(pid int, oomMemcg, taskMemcg, comm string) string {
	return fmt.Sprintf("oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,oom_memcg=%s,task_memcg=%s,task=%s,pid=%d,uid=0",
		oomMemcg, taskMemcg, comm, pid)
}

func killed(pid int) string {
	return fmt.Sprintf("Memory cgroup out of memory: Killed process %d (sh) total-vm:51428kB, anon-rss:32388kB, file-rss:1520kB, shmem-rss:0kB, UID:0 pgtables:116kB oom_score_adj:1", pid)
}

// A victim logged after the mark is found by its PID, with the paths of its
// summary line; one logged before the mark is an earlier holder of the PID,
// and a PID the log never named is no victim.
func TestVictimAfterMark(t *testing.T) {
	l, f := newFakeLog(t)
	f.log(summary(100, "/old.scope", "/old.scope", "sh"))
	f.log(killed(100))
	mark, err := l.Mark()
	if err != nil {
		t.Fatal(err)
	}
	if mark != 2 {
		t.Errorf("mark %d, want the last record's 2", mark)
	}
	if _, ok, err := l.Victim(mark, hasPid(100)); ok || err != nil {
		t.Errorf("a victim logged before the mark: found %v, %v", ok, err)
	}
	f.log("eth0: link up")
	seq := f.log(summary(100, "/pod.slice", "/pod.slice/c.scope", "a,pid=7,b")) // commas in the command name
	f.log(" dump_stack_lvl+0x48/0x70")
	f.log(killed(100))
	f.log("oom_reaper: reaped process 100 (sh), now anon-rss:0kB, file-rss:0kB, shmem-rss:0kB")
	v, ok, err := l.Victim(mark, hasPid(100))
	if err != nil || !ok {
		t.Fatalf("the victim logged after the mark: found %v, %v", ok, err)
	}
	if v.Pid != 100 || v.Seq != seq || v.OOMMemcg != "/pod.slice" || v.TaskMemcg != "/pod.slice/c.scope" {
		t.Errorf("victim %+v, want pid 100, seq %d, oom_memcg /pod.slice, task_memcg /pod.slice/c.scope", v, seq)
	}
	if _, ok, _ := l.Victim(mark, hasPid(101)); ok {
		t.Error("PID 101, never logged: found")
	}
}

// A caller that sees other PIDs than the kernel's (a PID namespace of its
// own) finds a victim by its cgroup; the last one logged there wins.
func TestVictimByCgroup(t *testing.T) {
	l, f := newFakeLog(t)
	mark, err := l.Mark()
	if err != nil {
		t.Fatal(err)
	}
	f.log(summary(300, "/node/pod.slice/c.scope", "/node/pod.slice/c.scope", "sh"))
	f.log(killed(300))
	f.log(summary(301, "/node/pod.slice", "/node/pod.slice/c.scope", "sh"))
	f.log(killed(301))
	f.log(summary(302, "/node/pod.slice/d.scope", "/node/pod.slice/d.scope", "sh"))
	f.log(killed(302))
	v, ok, err := l.Victim(mark, func(v Victim) bool { return v.TaskMemcg == "/node/pod.slice/c.scope" })
	if err != nil || !ok || v.Pid != 301 {
		t.Errorf("victim in c.scope: %+v, %v, %v; want the last one, pid 301", v, ok, err)
	}
}

// With the summary rate-limited away, the "Killed process" line alone names
// the victim, without paths; an old summary of the same PID is not taken
// for its.
func TestVictimWithoutSummary(t *testing.T) {
	l, f := newFakeLog(t)
	mark, err := l.Mark()
	if err != nil {
		t.Fatal(err)
	}
	f.log(summary(200, "/x", "/x", "sh"))
	f.log(killed(200))
	for i := 0; i < summaryReach+1; i++ {
		f.log("noise")
	}
	seq := f.log(killed(200))
	v, ok, err := l.Victim(mark, hasPid(200))
	if err != nil || !ok {
		t.Fatalf("found %v, %v", ok, err)
	}
	if v.Seq != seq || v.TaskMemcg != "" || v.OOMMemcg != "" {
		t.Errorf("victim %+v, want seq %d and no paths", v, seq)
	}
}

// The victims kept are bounded: the oldest go.
func TestVictimsBounded(t *testing.T) {
	l, f := newFakeLog(t)
	for pid := 1; pid <= maxVictims+10; pid++ {
		f.log(killed(pid))
	}
	if _, err := l.Mark(); err != nil {
		t.Fatal(err)
	}
	if n := len(l.victims); n != maxVictims {
		t.Errorf("%d victims kept, want %d", n, maxVictims)
	}
	if _, ok := l.victims[1]; ok {
		t.Error("the oldest victim was kept")
	}
	if _, ok := l.victims[maxVictims+10]; !ok {
		t.Error("the newest victim was dropped")
	}
}

// A log that cannot be opened (no /dev/kmsg, no permission) says so, every
// time, and a closed one fails.
func TestLogUnreadable(t *testing.T) {
	l := NewReading(func() (int, error) { return -1, unix.EPERM })
	if _, err := l.Mark(); err == nil {
		t.Error("Mark of an unreadable log: no error")
	}
	if _, _, err := l.Victim(0, hasPid(1)); err == nil {
		t.Error("Victim of an unreadable log: no error")
	}
	l2, _ := newFakeLog(t)
	l2.Close()
	if _, err := l2.Mark(); err == nil {
		t.Error("Mark after Close: no error")
	}
}

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		msg  string
		pid  int
		kind string // "summary", "killed" or ""
	}{
		{summary(6394, "/a", "/a/b", "sh"), 6394, "summary"},
		{"oom-kill:constraint=CONSTRAINT_NONE,nodemask=(null),cpuset=/,mems_allowed=0,global_oom,task_memcg=/user.slice,task=x,pid=9,uid=0", 9, "summary"},
		{killed(42), 42, "killed"},
		{"Out of memory: Killed process 43 (java) total-vm:1kB", 43, "killed"},
		{"oom_reaper: reaped process 42 (sh), now anon-rss:0kB", 0, ""},
		{"Killed process x (sh)", 0, ""},
		{"oom-kill:constraint=CONSTRAINT_MEMCG,task=sh", 0, ""},
	} {
		if pid, _, _, ok := parseSummary([]byte(tc.msg)); ok != (tc.kind == "summary") || (ok && pid != tc.pid) {
			t.Errorf("parseSummary(%q) = %d, %v", tc.msg, pid, ok)
		}
		if pid, ok := parseKilled([]byte(tc.msg)); ok != (tc.kind == "killed") || (ok && pid != tc.pid) {
			t.Errorf("parseKilled(%q) = %d, %v", tc.msg, pid, ok)
		}
	}
	if _, _, ok := parseRecord([]byte("no header")); ok {
		t.Error("parseRecord of a line without a header: ok")
	}
	if seq, msg, ok := parseRecord([]byte("4,35072,22304608572,-,c;hello\n K=v\n")); !ok || seq != 35072 || string(msg) != "hello" {
		t.Errorf("parseRecord: %d %q %v", seq, msg, ok)
	}
}
