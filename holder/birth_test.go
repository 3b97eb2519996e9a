package holder

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/example/containerd-shim-example-v2/cgroup"
)

// The holder is born in its pod cgroup (every hierarchy a holder joins under
// v1, the unified tree under v2), and no thread of the shim is left there or
// anywhere but its own cgroups afterwards.
func TestHolderBornInPodCgroup(t *testing.T) { bothHolders(t, testHolderBornInPodCgroup) }

func testHolderBornInPodCgroup(t *testing.T) {
	needRoot(t)
	r := startReaper(t)
	parent := fmt.Sprintf("/holder-test-%d", os.Getpid())
	path := parent + "/pod"
	if err := CreateCgroup(CgroupRoot, path); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = RemoveCgroup(CgroupRoot, path)
		_ = RemoveCgroup(CgroupRoot, parent)
	})
	before := threadCgroupFiles(t)
	h, err := Start(Config{ID: "born", NewIPC: true, Cgroup: path, Reaper: r})
	if err != nil {
		t.Fatal(err)
	}
	defer stopAndWait(t, h)

	members := memberFiles(t, path)
	if len(members) == 0 {
		t.Fatalf("no cgroup made at %s", path)
	}
	for _, f := range members {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		// The holder's pid (v2's cgroup.procs), or its threads (v1's tasks;
		// the Go holder may start more meanwhile), and nothing else.
		ids := strings.Fields(string(data))
		if !slices.Contains(ids, strconv.Itoa(h.Pid)) {
			t.Errorf("%s lists %v, without the holder %d", f, ids, h.Pid)
		}
		for _, id := range ids {
			if _, err := os.Stat(fmt.Sprintf("/proc/%d/task/%s", h.Pid, id)); err != nil {
				t.Errorf("%s lists %s, not the holder (%d) nor one of its threads", f, id, h.Pid)
			}
		}
	}
	// Every thread of this process is where it was (the forking thread came
	// home; threads born meanwhile are compared with their process's).
	after := threadCgroupFiles(t)
	for tid, cg := range after {
		want, ok := before[tid]
		if !ok {
			want = before[os.Getpid()]
		}
		if cg != want {
			t.Errorf("thread %d's cgroups changed:\n%s\nwant\n%s", tid, cg, want)
		}
	}
}

// memberFiles are the files listing the processes (v2) or threads (v1) of
// the cgroup at path in each hierarchy it was made in.
func memberFiles(t *testing.T, path string) []string {
	t.Helper()
	if cgroup.Unified(CgroupRoot) {
		return []string{filepath.Join(CgroupRoot, path, "cgroup.procs")}
	}
	hs, err := holderHierarchies(CgroupRoot)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, h := range hs {
		out = append(out, filepath.Join(h, path, "tasks"))
	}
	return out
}

// threadCgroupFiles reads /proc/self/task/*/cgroup.
func threadCgroupFiles(t *testing.T) map[int]string {
	t.Helper()
	entries, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Fatal(err)
	}
	out := map[int]string{}
	for _, e := range entries {
		tid, _ := strconv.Atoi(e.Name())
		data, err := os.ReadFile(filepath.Join("/proc/self/task", e.Name(), "cgroup"))
		if err != nil {
			continue // the thread ended
		}
		out[tid] = string(data)
	}
	return out
}
