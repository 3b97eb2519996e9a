// Package oomlogtest is a kernel log for tests of oomlog's readers: records
// written through a SOCK_SEQPACKET pair, which returns one per read and
// EAGAIN when none is left, as /dev/kmsg does.
package oomlogtest

import (
	"fmt"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/example/containerd-shim-example-v2/oomlog"
)

// Kernel is a fake kernel log and the oomlog.Log that reads it.
type Kernel struct {
	t   *testing.T
	w   int
	seq uint64
	Log *oomlog.Log
}

// New returns a fake kernel log, closed when the test ends.
func New(t *testing.T) *Kernel {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	k := &Kernel{t: t, w: fds[1], Log: oomlog.NewReading(func() (int, error) { return fds[0], nil })}
	t.Cleanup(func() { k.Log.Close(); _ = unix.Close(fds[1]) })
	return k
}

// Print logs msg as the next record, with a dictionary line as the kernel
// adds, and returns its sequence number.
func (k *Kernel) Print(msg string) uint64 {
	k.t.Helper()
	k.seq++
	rec := fmt.Sprintf("6,%d,%d,-;%s\n SUBSYSTEM=x\n", k.seq, k.seq*1000, msg)
	if _, err := unix.Write(k.w, []byte(rec)); err != nil {
		k.t.Fatal(err)
	}
	return k.seq
}

// Summary is the kernel's "oom-kill:" line of a kill.
func Summary(pid int, oomMemcg, taskMemcg, comm string) string {
	return fmt.Sprintf("oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,oom_memcg=%s,task_memcg=%s,task=%s,pid=%d,uid=0",
		oomMemcg, taskMemcg, comm, pid)
}

// Killed is the kernel's "Killed process" line of a cgroup's OOM kill.
func Killed(pid int) string {
	return fmt.Sprintf("Memory cgroup out of memory: Killed process %d (sh) total-vm:51428kB, anon-rss:32388kB, file-rss:1520kB, shmem-rss:0kB, UID:0 pgtables:116kB oom_score_adj:1", pid)
}

// OOMKill logs a kill as the kernel does: its summary, unless the rate
// limit took it (summary false), then the victim's line.
func (k *Kernel) OOMKill(pid int, oomMemcg, taskMemcg string, summary bool) {
	k.t.Helper()
	if summary {
		k.Print(Summary(pid, oomMemcg, taskMemcg, "sh"))
	}
	k.Print(Killed(pid))
}
