package oomlog

import (
	"bytes"
	"strconv"
)

// A /dev/kmsg record (the kernel's Documentation/ABI/testing/dev-kmsg):
//
//	<prio>,<seq>,<usec since boot>,<flags>[,more fields];<message>\n
//	[ KEY=value\n ...]
//
// The two lines an OOM kill logs, in this order:
//
//	oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,oom_memcg=/a.slice/b.scope,task_memcg=/a.slice/b.scope,task=sh,pid=6394,uid=0
//	Memory cgroup out of memory: Killed process 6394 (sh) total-vm:51428kB, anon-rss:32388kB, ...
//
// The first (kernel 4.19 on) is rate-limited with the rest of the report,
// the second is not. Only those are read; every other record is skipped.

// parseRecord splits a record into its sequence number and its message
// (its first line, after the header).
func parseRecord(rec []byte) (seq uint64, msg []byte, ok bool) {
	semi := bytes.IndexByte(rec, ';')
	if semi < 0 {
		return 0, nil, false
	}
	fields := bytes.SplitN(rec[:semi], []byte(","), 3)
	if len(fields) < 2 {
		return 0, nil, false
	}
	seq, err := strconv.ParseUint(string(fields[1]), 10, 64)
	if err != nil {
		return 0, nil, false
	}
	msg = rec[semi+1:]
	if nl := bytes.IndexByte(msg, '\n'); nl >= 0 {
		msg = msg[:nl]
	}
	return seq, msg, true
}

var (
	summaryPrefix = []byte("oom-kill:")
	killedMark    = []byte("Killed process ")
)

// parseKilled reads the victim's PID from a "Killed process <pid> (<comm>)"
// line (global or a cgroup's OOM; the reaper's "reaped process" lines do
// not count).
func parseKilled(msg []byte) (pid int, ok bool) {
	i := bytes.Index(msg, killedMark)
	if i < 0 {
		return 0, false
	}
	rest := msg[i+len(killedMark):]
	end := bytes.IndexByte(rest, ' ')
	if end < 0 {
		end = len(rest)
	}
	pid, err := strconv.Atoi(string(rest[:end]))
	if err != nil || pid <= 0 {
		return 0, false
	}
	return pid, true
}

// parseSummary reads the "oom-kill:" line: the cgroup whose limit was met,
// the victim's cgroup and its PID. The victim's command name (task=) may hold
// any byte, commas too, so the PID is looked for after the last ",pid=".
func parseSummary(msg []byte) (pid int, oomMemcg, taskMemcg string, ok bool) {
	if !bytes.HasPrefix(msg, summaryPrefix) {
		return 0, "", "", false
	}
	oomMemcg, _ = field(msg, ",oom_memcg=")
	taskMemcg, hasTask := field(msg, ",task_memcg=")
	p := bytes.LastIndex(msg, []byte(",pid="))
	if !hasTask || p < 0 {
		return 0, "", "", false
	}
	rest := msg[p+len(",pid="):]
	if end := bytes.IndexByte(rest, ','); end >= 0 {
		rest = rest[:end]
	}
	pid, err := strconv.Atoi(string(rest))
	if err != nil || pid <= 0 {
		return 0, "", "", false
	}
	return pid, oomMemcg, taskMemcg, true
}

// field returns the value after key, up to the next comma (cgroup paths
// hold none that systemd or a runtime makes).
func field(msg []byte, key string) (string, bool) {
	i := bytes.Index(msg, []byte(key))
	if i < 0 {
		return "", false
	}
	v := msg[i+len(key):]
	if end := bytes.IndexByte(v, ','); end >= 0 {
		v = v[:end]
	}
	return string(v), true
}
