package sandbox

import (
	"context"
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	sandboxapi "github.com/example/containerd-shim-example-v2/proto/sandbox/v1"
)

// A container of a pod that shares its PID namespace, with CAP_SYS_PTRACE
// (and CAP_SYS_CHROOT, for the test's chroot into its rootfs), reads its
// PID 1's root through /proc/1/root. The holder is that PID 1: its root
// must not be the node's /. Found by a review.
func TestPodPID1DoesNotExposeTheNodesRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("starting a holder needs root")
	}
	for _, tool := range []string{"nsenter", "unshare", "setpriv", "chroot", "busybox"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s: %v", tool, err)
		}
	}
	bb, _ := exec.LookPath("busybox")
	if !staticELF(bb) {
		t.Skipf("%s is not a static executable: it cannot run alone in a rootfs", bb)
	}
	s, _ := newService(t)
	ctx := context.Background()
	if _, err := s.CreateSandbox(ctx, &sandboxapi.CreateSandboxRequest{SandboxId: "pid1", BundlePath: t.TempDir(),
		Options: hostNetPod("pid1-host", nil)}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.ShutdownSandbox(ctx, &sandboxapi.ShutdownSandboxRequest{SandboxId: "pid1"}) })
	start, err := s.StartSandbox(ctx, &sandboxapi.StartSandboxRequest{SandboxId: "pid1"})
	if err != nil {
		t.Fatal(err)
	}
	secret := filepath.Join(t.TempDir(), "node-secret")
	if err := os.WriteFile(secret, []byte("node-only\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	rootfs := t.TempDir()
	for _, d := range []string{"bin", "proc"} {
		if err := os.Mkdir(filepath.Join(rootfs, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	data, err := os.ReadFile(bb)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(rootfs, "bin", "busybox"), data, 0o755); err != nil {
		t.Fatal(err)
	}
	// The "container": the pod's PID namespace, a mount namespace of its
	// own with that namespace's /proc, CAP_SYS_PTRACE and CAP_SYS_CHROOT
	// in its bounding set, its own rootfs.
	script := `mount -t proc proc "$1/proc" && exec setpriv --bounding-set -all,+sys_chroot,+sys_ptrace --inh-caps -all -- chroot "$1" /bin/busybox cat "/proc/1/root$2"`
	out, err := exec.Command("nsenter", "--target", strconv.Itoa(int(start.Pid)), "--pid", "--",
		"unshare", "--mount", "--propagation", "private", "--",
		"/bin/sh", "-c", script, "sh", rootfs, secret).CombinedOutput()
	if err == nil && strings.Contains(string(out), "node-only") {
		t.Errorf("a container in the pod's PID namespace read the node's %s through /proc/1/root (the holder's root is the node's /): %q", secret, out)
	}
	t.Logf("the container's read of /proc/1/root%s: %v: %s", secret, err, strings.TrimSpace(string(out)))
}

// staticELF reports whether path is an executable without an interpreter.
func staticELF(path string) bool {
	f, err := elf.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return false
		}
	}
	return true
}
