package oomlog_test

import (
	"encoding/json"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/example/containerd-shim-example-v2/oomlog"
	"github.com/example/containerd-shim-example-v2/oomlog/oomlogtest"
)

func hasPid(pid int) func(oomlog.Victim) bool {
	return func(v oomlog.Victim) bool { return v.Pid == pid }
}

// A victim logged after the mark is found by its PID, with the paths of its
// summary line; one logged before the mark is an earlier holder of the PID,
// and a PID the log never named is no victim.
func TestVictimAfterMark(t *testing.T) {
	k := oomlogtest.New(t)
	l := k.Log
	k.Print(oomlogtest.Summary(100, "/old.scope", "/old.scope", "sh"))
	k.Print(oomlogtest.Killed(100))
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
	k.Print("eth0: link up")
	seq := k.Print(oomlogtest.Summary(100, "/pod.slice", "/pod.slice/c.scope", "a,pid=7,b")) // commas in the command name
	k.Print(" dump_stack_lvl+0x48/0x70")
	k.Print(oomlogtest.Killed(100))
	k.Print("oom_reaper: reaped process 100 (sh), now anon-rss:0kB, file-rss:0kB, shmem-rss:0kB")
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
	k := oomlogtest.New(t)
	l := k.Log
	mark, err := l.Mark()
	if err != nil {
		t.Fatal(err)
	}
	k.Print(oomlogtest.Summary(300, "/node/pod.slice/c.scope", "/node/pod.slice/c.scope", "sh"))
	k.Print(oomlogtest.Killed(300))
	k.Print(oomlogtest.Summary(301, "/node/pod.slice", "/node/pod.slice/c.scope", "sh"))
	k.Print(oomlogtest.Killed(301))
	k.Print(oomlogtest.Summary(302, "/node/pod.slice/d.scope", "/node/pod.slice/d.scope", "sh"))
	k.Print(oomlogtest.Killed(302))
	v, ok, err := l.Victim(mark, func(v oomlog.Victim) bool { return v.TaskMemcg == "/node/pod.slice/c.scope" })
	if err != nil || !ok || v.Pid != 301 {
		t.Errorf("victim in c.scope: %+v, %v, %v; want the last one, pid 301", v, ok, err)
	}
}

// With the summary rate-limited away, the "Killed process" line alone names
// the victim, without paths; an old summary of the same PID is not taken
// for its.
func TestVictimWithoutSummary(t *testing.T) {
	k := oomlogtest.New(t)
	l := k.Log
	mark, err := l.Mark()
	if err != nil {
		t.Fatal(err)
	}
	k.Print(oomlogtest.Summary(200, "/x", "/x", "sh"))
	k.Print(oomlogtest.Killed(200))
	for i := 0; i < oomlog.SummaryReach+1; i++ {
		k.Print("noise")
	}
	seq := k.Print(oomlogtest.Killed(200))
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
	k := oomlogtest.New(t)
	l := k.Log
	for pid := 1; pid <= oomlog.MaxVictims+10; pid++ {
		k.Print(oomlogtest.Killed(pid))
	}
	if _, err := l.Mark(); err != nil {
		t.Fatal(err)
	}
	if n, kept := l.Kept(1); n != oomlog.MaxVictims || kept {
		t.Errorf("%d victims kept, the oldest among them %v; want %d, without it", n, kept, oomlog.MaxVictims)
	}
	if _, kept := l.Kept(oomlog.MaxVictims + 10); !kept {
		t.Error("the newest victim was dropped")
	}
}

// A log that cannot be opened (no /dev/kmsg, no permission) says so, every
// time, and a closed one fails.
func TestLogUnreadable(t *testing.T) {
	l := oomlog.NewReading(func() (int, error) { return -1, unix.EPERM })
	if _, err := l.Mark(); err == nil {
		t.Error("Mark of an unreadable log: no error")
	}
	if _, _, err := l.Victim(0, hasPid(1)); err == nil {
		t.Error("Victim of an unreadable log: no error")
	}
	l2 := oomlogtest.New(t).Log
	l2.Close()
	if _, err := l2.Mark(); err == nil {
		t.Error("Mark after Close: no error")
	}
}

// A log handed to the next binary of an in-place upgrade reads on from its
// predecessor's last read: a victim logged between that read and the
// successor's start is found after a mark the predecessor took, and so is
// one the predecessor had read already. A log never opened hands nothing
// over.
func TestLogHandedOver(t *testing.T) {
	dup := func(fd int, _ string) (int, error) { return unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0) }
	if st, err := oomlogtest.New(t).Log.Export(dup); st != nil || err != nil {
		t.Errorf("a log never opened hands over %+v, %v; want nothing", st, err)
	}
	k := oomlogtest.New(t)
	mark, err := k.Log.Mark()
	if err != nil {
		t.Fatal(err)
	}
	k.OOMKill(100, "/pod.slice/a.scope", "/pod.slice/a.scope", true)
	if _, err := k.Log.Mark(); err != nil { // the predecessor reads 100's kill
		t.Fatal(err)
	}
	st, err := k.Log.Export(dup)
	if err != nil || st == nil {
		t.Fatalf("export: %+v, %v", st, err)
	}
	k.OOMKill(101, "/pod.slice/b.scope", "/pod.slice/b.scope", false) // during the switch
	data, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	var handed oomlog.State
	if err := json.Unmarshal(data, &handed); err != nil {
		t.Fatal(err)
	}
	next := oomlog.NewReading(func() (int, error) {
		t.Error("the successor opened the log anew")
		return -1, unix.EBADF
	})
	defer next.Close()
	if err := next.Import(handed); err != nil {
		t.Fatal(err)
	}
	for _, pid := range []int{100, 101} {
		if _, ok, err := next.Victim(mark, hasPid(pid)); !ok || err != nil {
			t.Errorf("victim %d after the predecessor's mark, in the successor: found %v, %v", pid, ok, err)
		}
	}
	if v, _, _ := next.Victim(mark, hasPid(100)); v.TaskMemcg != "/pod.slice/a.scope" {
		t.Errorf("victim 100 handed over without its summary's paths: %+v", v)
	}
}
