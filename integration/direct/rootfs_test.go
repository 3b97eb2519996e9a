package direct

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/containerd/api/types"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// Rootfs entries with a Target, as containerd 2.x may send them: the first
// is the image, the next is mounted at its Target inside it, also when the
// image has an absolute symlink on the way, which is resolved inside the
// rootfs as containerd's own mount code resolves it (the directory it names
// is made there, not on the host). The container sees the mount there, and
// after Delete nothing is left mounted in the bundle. A Target that cannot
// be a directory fails Create and leaves nothing mounted.
func TestRootfsMountsWithTarget(t *testing.T) {
	t.Parallel()
	env := NewEnv(t)
	// A writable image of its own: busybox, and /data -> /<name>, a path
	// that exists neither in the image nor on the host.
	image := t.TempDir()
	if err := os.Mkdir(filepath.Join(image, "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := copyExecutable(busyboxPath, filepath.Join(image, "bin", "busybox")); err != nil {
		t.Fatal(err)
	}
	name := "target-test-" + RandID(8)
	if err := os.Symlink("/"+name, filepath.Join(image, "data")); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// Only if the mount escaped onto the host.
		_ = unix.Unmount("/"+name, unix.MNT_DETACH)
		_ = os.Remove("/" + name)
	})

	c := env.Launch(t, Config{Mode: Bootstrap, Name: "target", Args: []string{"/bin/busybox", "cat", "/proc/mounts"}})
	if err := os.Mkdir(filepath.Join(c.Bundle.Dir, "rootfs"), 0o755); err != nil {
		t.Fatal(err)
	}
	c.Bundle.Spec.Root = &specs.Root{Path: "rootfs"}
	writeSpec(t, c.Bundle)
	ctx := TestContext(t, WaitTimeout)

	r := c.CreateRequest()
	r.Rootfs = []*types.Mount{
		{Type: "bind", Source: image, Options: []string{"rbind"}},
		{Type: "tmpfs", Source: "tmpfs", Target: "/bin/busybox/below-a-file", Options: []string{"size=1m"}},
	}
	if _, err := c.Task().Create(ctx, r); err == nil || !strings.Contains(err.Error(), "not a directory") {
		t.Errorf("Create with a Target below a file: %v, want an error saying not a directory", err)
	}
	if m, err := MountsUnder(c.Bundle.Dir); err != nil || len(m) > 0 {
		t.Fatalf("mounts under the bundle after a failed Create: %v %v", m, err)
	}

	r.Rootfs[1].Target = "/data"
	if _, err := c.Task().Create(ctx, r); err != nil {
		t.Fatalf("Create: %v", err)
	}
	start(t, ctx, c, "")
	if w := wait(t, ctx, c, ""); w.GetExitStatus() != 0 {
		t.Errorf("exit status %d", w.GetExitStatus())
	}
	stdout, _ := c.IO.Output(t, WaitTimeout)
	found := false
	for _, line := range strings.Split(stdout, "\n") {
		if f := strings.Fields(line); len(f) > 2 && f[1] == "/"+name && f[2] == "tmpfs" {
			found = true
		}
	}
	if !found {
		t.Errorf("no tmpfs at /%s in the container (Target /data through the image's symlink); its mounts:\n%s", name, stdout)
	}
	deleteTask(t, ctx, c, "")
	if m, err := MountsUnder(c.Bundle.Dir); err != nil || len(m) > 0 {
		t.Errorf("mounts under the bundle after Delete: %v %v", m, err)
	}
	if _, err := os.Lstat("/" + name); err == nil {
		t.Errorf("/%s was made on the host", name)
	}
	if _, err := os.Stat(filepath.Join(image, name)); err != nil {
		t.Errorf("the mount point was not made inside the image: %v", err)
	}
}

func writeSpec(t *testing.T, b *Bundle) {
	t.Helper()
	data, err := json.Marshal(b.Spec)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(b.Dir, SpecFile), data, 0o644); err != nil {
		t.Fatal(err)
	}
}
