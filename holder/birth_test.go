package holder

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/example/containerd-shim-example-v2/cgroup"
)

// The holder is born in its pod cgroup (every hierarchy a holder joins under
// v1, the unified tree under v2), and no thread of the shim is left there or
// anywhere but its own cgroups afterwards.
func TestHolderBornInPodCgroup(t *testing.T) { bothHolders(t, testHolderBornInPodCgroup) }

func testHolderBornInPodCgroup(t *testing.T) {
	needRoot(t)
	r := startReaper(t)
	path := podCgroup(t, "holder-test")
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

// On a cgroup v2 node whose kernel has no clone3 (before 5.7, or a seccomp
// profile that answers it with ENOSYS, as Docker's default does), the
// holder is started without CLONE_INTO_CGROUP and moved into its cgroup
// after the fork. The test process re-runs itself with a seccomp filter that
// refuses clone3, so the filter binds only that child.
func TestHolderWithoutClone3IsMovedIntoItsCgroup(t *testing.T) {
	needRoot(t)
	if os.Getenv("HOLDER_TEST_NO_CLONE3") == "" {
		root := unifiedRoot()
		if root == "" {
			t.Skip("no cgroup v2 tree on this host")
		}
		cmd := exec.Command(os.Args[0], "-test.run=^TestHolderWithoutClone3IsMovedIntoItsCgroup$", "-test.v")
		cmd.Env = append(os.Environ(), "HOLDER_TEST_NO_CLONE3="+root)
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), "holder moved into") {
			t.Fatalf("the test without clone3: %v\n%s", err, out)
		}
		return
	}
	if runtime.GOARCH != "amd64" {
		t.Skip("the filter below names amd64's clone3")
	}
	const sysClone3 = 435
	filter := []unix.SockFilter{
		{Code: unix.BPF_LD | unix.BPF_W | unix.BPF_ABS, K: 0}, // the syscall number
		{Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, K: sysClone3, Jt: 0, Jf: 1},
		{Code: unix.BPF_RET | unix.BPF_K, K: unix.SECCOMP_RET_ERRNO | uint32(unix.ENOSYS)},
		{Code: unix.BPF_RET | unix.BPF_K, K: unix.SECCOMP_RET_ALLOW},
	}
	prog := unix.SockFprog{Len: uint16(len(filter)), Filter: &filter[0]}
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		t.Fatal(err)
	}
	if _, _, e := unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, unix.SECCOMP_FILTER_FLAG_TSYNC,
		uintptr(unsafe.Pointer(&prog))); e != 0 {
		t.Fatalf("seccomp: %v", e)
	}
	CgroupRoot = os.Getenv("HOLDER_TEST_NO_CLONE3")
	path := podCgroup(t, "holder-noclone3")
	h, err := Start(Config{ID: "noclone3", Cgroup: path, Reaper: startReaper(t)})
	if err != nil {
		t.Fatalf("Start without clone3: %v", err)
	}
	defer stopAndWait(t, h)
	procs, err := os.ReadFile(filepath.Join(CgroupRoot, path, "cgroup.procs"))
	if err != nil || strings.TrimSpace(string(procs)) != strconv.Itoa(h.Pid) {
		t.Fatalf("the pod cgroup lists %q (%v), want the holder %d alone", procs, err, h.Pid)
	}
	t.Logf("holder moved into %s", path)
}

// unifiedRoot is a cgroup v2 tree that takes processes: the root on a v2
// host, the unified tree of a hybrid one.
func unifiedRoot() string {
	for _, root := range []string{"/sys/fs/cgroup", "/sys/fs/cgroup/unified"} {
		if cgroup.Unified(root) {
			return root
		}
	}
	return ""
}

// podCgroup makes a pod cgroup "/<prefix>-<pid>/pod" under CgroupRoot and
// removes it, and its parent, at the end of the test.
func podCgroup(t *testing.T, prefix string) string {
	t.Helper()
	parent := fmt.Sprintf("/%s-%d", prefix, os.Getpid())
	path := parent + "/pod"
	if err := CreateCgroup(CgroupRoot, path); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = RemoveCgroup(CgroupRoot, path)
		_ = RemoveCgroup(CgroupRoot, parent)
	})
	return path
}
