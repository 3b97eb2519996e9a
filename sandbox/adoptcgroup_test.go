package sandbox

import (
	"context"
	"fmt"
	"os"
	"path"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/example/containerd-shim-example-v2/cgroup"
	"github.com/example/containerd-shim-example-v2/holder"
	sandboxapi "github.com/example/containerd-shim-example-v2/proto/sandbox/v1"
	"github.com/example/containerd-shim-example-v2/reaper"
)

type dupKeeper struct{}

func (dupKeeper) KeepDup(f *os.File) (int, error) { return unix.Dup(int(f.Fd())) }

// A running pod without a cgroup parent handed over by a binary that left
// its holder in the shim's cgroup (Service without a namespace plays it)
// gets the cgroup a pod started now gets, with its holder in it: it has
// statistics again, and its shutdown removes the cgroup.
func TestImportedPodWithoutCgroupGetsOne(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("starting a holder and making cgroups needs root")
	}
	r := reaper.New()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go r.Run(ctx)
	old := New(Config{Reaper: r, Tasks: func() int { return 0 }})
	bg := context.Background()
	if _, err := old.CreateSandbox(bg, &sandboxapi.CreateSandboxRequest{SandboxId: "adopted", BundlePath: t.TempDir(),
		Options: hostNetPod("adopted-host", nil)}); err != nil {
		t.Fatal(err)
	}
	start, err := old.StartSandbox(bg, &sandboxapi.StartSandboxRequest{SandboxId: "adopted"})
	if err != nil {
		t.Fatal(err)
	}
	pid := int(start.Pid)
	t.Cleanup(func() { _ = unix.Kill(pid, unix.SIGKILL) })
	st, err := old.Export(dupKeeper{})
	if err != nil {
		t.Fatal(err)
	}

	ns := fmt.Sprintf("shimtest-adopt-%d", os.Getpid())
	t.Cleanup(func() { _ = holder.RemoveCgroup(holder.CgroupRoot, "/"+ns) })
	next := New(Config{Reaper: r, Tasks: func() int { return 0 }, Namespace: ns})
	if err := next.Import(*st, func(fd int, _ string, _ bool) (*os.File, error) {
		return os.NewFile(uintptr(fd), "life"), nil
	}); err != nil {
		t.Fatal(err)
	}
	want := path.Join("/", ns, "adopted")
	if cg := memoryCgroup(t, pid); cg != want {
		t.Errorf("the handed-over holder is in memory cgroup %q, want %q", cg, want)
	}
	if _, err := next.SandboxMetrics(bg, &sandboxapi.SandboxMetricsRequest{SandboxId: "adopted"}); err != nil {
		t.Errorf("SandboxMetrics of the handed-over pod: %v", err)
	}
	if _, err := next.ShutdownSandbox(bg, &sandboxapi.ShutdownSandboxRequest{SandboxId: "adopted"}); err != nil {
		t.Fatal(err)
	}
	dir := path.Join(holder.CgroupRoot, "memory", want)
	if cgroup.Unified(holder.CgroupRoot) {
		dir = path.Join(holder.CgroupRoot, want)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("the pod's cgroup after ShutdownSandbox: %v, want it gone", err)
	}
}

// memoryCgroup is pid's cgroup in the memory hierarchy (v1) or the unified one.
func memoryCgroup(t *testing.T, pid int) string {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		t.Fatal(err)
	}
	unified := ""
	for _, l := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		parts := strings.SplitN(l, ":", 3)
		if len(parts) != 3 {
			continue
		}
		for _, c := range strings.Split(parts[1], ",") {
			if c == "memory" {
				return parts[2]
			}
		}
		if parts[0] == "0" {
			unified = parts[2]
		}
	}
	return unified
}
