package oomlog

import "testing"

// The two lines of an OOM kill are read, the reaper's and malformed ones are not.
func TestParse(t *testing.T) {
	for _, tc := range []struct {
		msg  string
		pid  int
		kind string // "summary", "killed" or ""
	}{
		{"oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,oom_memcg=/a,task_memcg=/a/b,task=sh,pid=6394,uid=0", 6394, "summary"},
		{"oom-kill:constraint=CONSTRAINT_NONE,nodemask=(null),cpuset=/,mems_allowed=0,global_oom,task_memcg=/user.slice,task=x,pid=9,uid=0", 9, "summary"},
		{"Memory cgroup out of memory: Killed process 42 (sh) total-vm:51428kB, anon-rss:32388kB", 42, "killed"},
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
