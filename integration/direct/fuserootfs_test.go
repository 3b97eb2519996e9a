package direct

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/containerd/containerd/api/types"
	tasktypes "github.com/containerd/containerd/api/types/task"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// A rootfs of type "fuse3.fuse-overlayfs" (containerd's fuse-overlayfs snapshotter) is
// mounted by mount.fuse3, as the stock shim does: the container runs on it and writes to
// its upper layer, and after Delete nothing is mounted in the bundle and the FUSE server
// the helper left behind is gone, reaped by the shim (its parent once the helper exits).
func TestRootfsThroughAFUSEHelper(t *testing.T) {
	t.Parallel()
	c, upper := fuseRootfsTask(t, "fuse", `echo written >/new && awk '$2 == "/" {print "root " $3}' /proc/mounts`)
	ctx := TestContext(t, WaitTimeout)
	server := fuseServerOf(filepath.Join(c.Bundle.Dir, "rootfs"))
	start(t, ctx, c, "")
	if w := wait(t, ctx, c, ""); w.GetExitStatus() != 0 {
		t.Errorf("exit status %d", w.GetExitStatus())
	}
	stdout, _ := c.IO.Output(t, WaitTimeout)
	if stdout != "root fuse.fuse-overlayfs\n" {
		t.Errorf("the container's root: %q, want it on fuse.fuse-overlayfs", stdout)
	}
	if b, err := os.ReadFile(filepath.Join(upper, "new")); err != nil || string(b) != "written\n" {
		t.Errorf("the container's write in the upper layer: %q, %v", b, err)
	}
	deleteTask(t, ctx, c, "")
	expectFUSEGone(t, c, server)
}

// The FUSE server is the daemon's child, and stays so across an in-place
// upgrade (same pid, new binary): the container runs on, and after its
// Delete the next binary's reaper reaps the server like any other child.
func TestFUSERootfsAcrossAnUpgrade(t *testing.T) {
	t.Parallel()
	c, _ := fuseRootfsTask(t, "fuse-upgrade", "sleep 60")
	ctx := TestContext(t, WaitTimeout)
	server := fuseServerOf(filepath.Join(c.Bundle.Dir, "rootfs"))
	if server == 0 {
		t.Fatal("no fuse-overlayfs server was found for the rootfs")
	}
	start(t, ctx, c, "")
	upgradeToSelf(t, ctx, c, 1)
	if ppid := parentOf(server); ppid != c.Shim.Pid {
		t.Errorf("after the upgrade the FUSE server's parent is %d, want the daemon %d", ppid, c.Shim.Pid)
	}
	expectStatus(t, ctx, c, "", tasktypes.Status_RUNNING)
	kill(t, ctx, c, "", sigKILL)
	if w := wait(t, ctx, c, ""); w.GetExitStatus() != 137 {
		t.Errorf("exit status %d, want 137", w.GetExitStatus())
	}
	deleteTask(t, ctx, c, "")
	expectFUSEGone(t, c, server)
}

// fuseRootfsTask creates a task running script in sh on a fuse3.fuse-overlayfs
// rootfs over the run's shared rootfs, or skips without FUSE; it returns the
// task and the overlay's upper directory.
func fuseRootfsTask(t *testing.T, name, script string) (*Container, string) {
	t.Helper()
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skipf("no FUSE: %v", err)
	}
	for _, bin := range []string{"mount.fuse3", "fuse-overlayfs"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Skipf("no %s (Debian's fuse3 and fuse-overlayfs): %v", bin, err)
		}
	}
	env := NewEnv(t)
	c := env.Launch(t, Config{Mode: Bootstrap, Name: name, Args: []string{"/bin/sh", "-c", script}})
	rootfs := filepath.Join(c.Bundle.Dir, "rootfs")
	layers := t.TempDir()
	upper, work := filepath.Join(layers, "upper"), filepath.Join(layers, "work")
	for _, d := range []string{rootfs, upper, work} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	c.Bundle.Spec.Root = &specs.Root{Path: "rootfs"}
	writeSpec(t, c.Bundle)
	r := c.CreateRequest()
	r.Rootfs = []*types.Mount{{Type: "fuse3.fuse-overlayfs", Source: "overlay",
		Options: []string{"lowerdir=" + tools.rootfs, "upperdir=" + upper, "workdir=" + work}}}
	if _, err := c.Task().Create(TestContext(t, WaitTimeout), r); err != nil {
		t.Fatalf("Create: %v", err)
	}
	return c, upper
}

// expectFUSEGone checks that nothing is mounted in c's bundle and that the
// FUSE server is gone: reaped, since a zombie nobody reaped stays listed.
func expectFUSEGone(t *testing.T, c *Container, server int) {
	t.Helper()
	if m, err := MountsUnder(c.Bundle.Dir); err != nil || len(m) > 0 {
		t.Errorf("mounts under the bundle after Delete: %v %v", m, err)
	}
	if server == 0 {
		t.Fatal("no fuse-overlayfs server was found for the rootfs")
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, err := os.Stat(filepath.Join("/proc", strconv.Itoa(server))); os.IsNotExist(err) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the FUSE server %d is still there after Delete", server)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// parentOf reads a process's parent pid from /proc (0 if it is gone).
func parentOf(pid int) int {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	if len(f) < 2 {
		return 0
	}
	ppid, _ := strconv.Atoi(f[1])
	return ppid
}

// fuseServerOf finds the fuse-overlayfs process serving mountpoint.
func fuseServerOf(mountpoint string) int {
	dirs, _ := os.ReadDir("/proc")
	for _, d := range dirs {
		pid, err := strconv.Atoi(d.Name())
		if err != nil {
			continue
		}
		b, _ := os.ReadFile(filepath.Join("/proc", d.Name(), "cmdline"))
		args := strings.Split(string(b), "\x00")
		if len(args) > 2 && filepath.Base(args[0]) == "fuse-overlayfs" && args[2] == mountpoint {
			return pid
		}
	}
	return 0
}
