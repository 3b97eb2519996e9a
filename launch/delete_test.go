package launch

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	taskapi "github.com/containerd/containerd/api/runtime/task/v2"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	bundlefiles "github.com/example/containerd-shim-example-v2/bundle"
	"github.com/example/containerd-shim-example-v2/oci"
)

// delete must work on a bundle whose runtime state, runtime record and pid
// file are missing, run any number of times, and always print a
// DeleteResponse; it must not remove the bundle (containerd does).
func TestDeleteIsIdempotentOnAnEmptyBundle(t *testing.T) {
	bundle := filepath.Join(t.TempDir(), "ns", "t1")
	if err := os.MkdirAll(filepath.Join(bundle, "rootfs"), 0o700); err != nil {
		t.Fatal(err)
	}
	f := Flags{Namespace: "ns-" + filepath.Base(t.TempDir()), ID: "t1", Bundle: bundle}
	for i := 0; i < 2; i++ {
		var out bytes.Buffer
		before := time.Now()
		if err := Delete(f, &out); err != nil {
			t.Fatalf("delete #%d: %v", i+1, err)
		}
		var resp taskapi.DeleteResponse
		if err := proto.Unmarshal(out.Bytes(), &resp); err != nil {
			t.Fatalf("delete #%d printed no DeleteResponse: %v", i+1, err)
		}
		if resp.ExitStatus != killedStatus || resp.ExitedAt.AsTime().Before(before.Add(-time.Second)) {
			t.Fatalf("delete #%d: %+v", i+1, &resp)
		}
	}
	if _, err := os.Stat(bundle); err != nil {
		t.Fatalf("bundle removed: %v", err)
	}
}

// A runtime that hangs in `delete --force` is killed at the action's
// deadline, and the rest of the cleanup still runs: the rootfs is
// unmounted and a DeleteResponse printed (containerd would otherwise kill
// the action at its own timeout and keep the mount).
func TestDeleteGoesOnAfterAHungRuntime(t *testing.T) {
	defer func(d time.Duration) { deleteTimeout = d }(deleteTimeout)
	deleteTimeout = 200 * time.Millisecond
	dir := t.TempDir()
	bundle, root := filepath.Join(dir, "bundle"), filepath.Join(dir, "root")
	for _, d := range []string{filepath.Join(bundle, "rootfs"), filepath.Join(root, "t1")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	hung, pidFile := filepath.Join(dir, "hung-runtime"), filepath.Join(dir, "runtime.pid")
	if err := os.WriteFile(hung, []byte("#!/bin/sh\necho $$ > "+pidFile+"\nexec sleep 60\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	rootfs := filepath.Join(bundle, "rootfs")
	mounted := os.Geteuid() == 0 && unix.Mount("tmpfs", rootfs, "tmpfs", 0, "") == nil
	if mounted {
		t.Cleanup(func() { unix.Unmount(rootfs, unix.MNT_DETACH) })
	}
	if err := (&oci.Runtime{Binary: hung, Root: root}).Save(bundle); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	var out bytes.Buffer
	go func() { done <- Delete(Flags{Namespace: "ns", ID: "t1", Bundle: bundle}, &out) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("delete is still waiting for the runtime it killed")
	}
	var resp taskapi.DeleteResponse
	if err := proto.Unmarshal(out.Bytes(), &resp); err != nil || resp.ExitStatus != killedStatus {
		t.Fatalf("response %+v (%v)", &resp, err)
	}
	// The hung runtime was killed, and reaped: nothing of it runs on.
	b, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	if stat, err := os.ReadFile("/proc/" + strings.TrimSpace(string(b)) + "/stat"); err == nil {
		t.Errorf("the hung runtime %s is still there: %s", strings.TrimSpace(string(b)), stat)
	}
	if mounted {
		var st, parent unix.Stat_t
		if err := unix.Stat(rootfs, &st); err == nil && unix.Stat(bundle, &parent) == nil && st.Dev != parent.Dev {
			t.Error("the rootfs is still mounted after the delete")
		}
	}
}

func TestDeleteReportsInitPid(t *testing.T) {
	bundle := t.TempDir()
	os.WriteFile(filepath.Join(bundle, "init.pid"), []byte("4242"), 0o600)
	var out bytes.Buffer
	if err := Delete(Flags{Namespace: "ns", ID: "nosuch-" + filepath.Base(bundle), Bundle: bundle}, &out); err != nil {
		t.Fatal(err)
	}
	var resp taskapi.DeleteResponse
	if err := proto.Unmarshal(out.Bytes(), &resp); err != nil || resp.Pid != 4242 {
		t.Fatalf("response %+v (%v)", &resp, err)
	}
}

// After the daemon died, delete reports the exit it recorded, not a guess.
func TestDeleteReportsRecordedExit(t *testing.T) {
	bundle := t.TempDir()
	at := time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)
	if err := bundlefiles.WriteExit(bundle, bundlefiles.Exit{Pid: 77, Status: 3, ExitedAt: at}); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := Delete(Flags{Namespace: "ns", ID: "gone-" + filepath.Base(bundle), Bundle: bundle}, &out); err != nil {
		t.Fatal(err)
	}
	var resp taskapi.DeleteResponse
	if err := proto.Unmarshal(out.Bytes(), &resp); err != nil {
		t.Fatal(err)
	}
	if resp.Pid != 77 || resp.ExitStatus != 3 || !resp.ExitedAt.AsTime().Equal(at) {
		t.Fatalf("response %+v", &resp)
	}
}

// An unmount the kernel refuses (not for being busy) is a warning: the
// action still succeeds, with the recorded exit in its response, and the
// rest of the cleanup runs. containerd reports a failed delete's task as
// exited with 255, whatever the daemon recorded.
func TestDeleteGoesOnAfterAFailedUnmount(t *testing.T) {
	defer func(f func(string) error) { unmountRootfs = f }(unmountRootfs)
	unmountRootfs = func(string) error { return fmt.Errorf("unmount rootfs: %w", unix.EPERM) }
	bundle := t.TempDir()
	at := time.Date(2026, 2, 3, 4, 5, 6, 7, time.UTC)
	if err := bundlefiles.WriteExit(bundle, bundlefiles.Exit{Pid: 78, Status: 5, ExitedAt: at}); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(t.TempDir(), "s", "sock")
	l, err := Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	l.Close() // the daemon died, its socket file stayed
	if err := bundlefiles.WriteAddress(bundle, SocketAddress(sock)); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := Delete(Flags{Namespace: "ns", ID: "stuck-" + filepath.Base(bundle), Bundle: bundle}, &out); err != nil {
		t.Fatalf("delete failed on the unmount: %v", err)
	}
	var resp taskapi.DeleteResponse
	if err := proto.Unmarshal(out.Bytes(), &resp); err != nil {
		t.Fatal(err)
	}
	if resp.Pid != 78 || resp.ExitStatus != 5 || !resp.ExitedAt.AsTime().Equal(at) {
		t.Fatalf("response %+v, want the recorded exit", &resp)
	}
	if _, err := os.Stat(sock); !os.IsNotExist(err) {
		t.Fatalf("the dead socket is still there after the failed unmount (%v)", err)
	}
}

// A killed daemon's socket goes; a live one's stays.
func TestDeleteRemovesOnlyADeadSocket(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "s", "sock")
	l, err := Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	bundle := t.TempDir()
	if err := bundlefiles.WriteAddress(bundle, SocketAddress(sock)); err != nil {
		t.Fatal(err)
	}
	f := Flags{Namespace: "ns", ID: "sock-" + filepath.Base(bundle), Bundle: bundle}
	var out bytes.Buffer
	if err := Delete(f, &out); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(sock); err != nil {
		t.Fatalf("a live daemon's socket was removed: %v", err)
	}
	l.Close() // the daemon dies; its socket file stays behind
	if err := Delete(f, &out); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(sock); !os.IsNotExist(err) {
		t.Fatalf("dead socket still there (%v)", err)
	}
}

// A bundle's address file may name any path. One that is not a socket (a
// device such as /dev/null, a plain file) is refused when connected to, as
// a dead socket is, but it is nobody's socket: delete leaves it.
func TestDeleteRemovesNothingButASocket(t *testing.T) {
	dir := t.TempDir()
	null := filepath.Join(dir, "null")
	if err := unix.Mknod(null, unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))); err != nil {
		t.Skipf("cannot make a device node: %v", err)
	}
	plain := filepath.Join(dir, "plain")
	if err := os.WriteFile(plain, []byte("keep me"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{null, plain} {
		bundle := t.TempDir()
		if err := bundlefiles.WriteAddress(bundle, SocketAddress(path)); err != nil {
			t.Fatal(err)
		}
		var out bytes.Buffer
		if err := Delete(Flags{Namespace: "ns", ID: "x-" + filepath.Base(bundle), Bundle: bundle}, &out); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Lstat(path); err != nil {
			t.Errorf("delete removed %s, which its bundle's address named: %v", path, err)
		}
	}
}

// The runtime's root is <DefaultRoot>/<namespace>: without a namespace (or
// with ".."), `delete -id <name>` would reach one level up, where <name> is
// a whole namespace's state directory and `runc delete --force` removes
// what it cannot load. delete refuses such a call before it runs anything,
// as the stock shim does. (The ids here name nothing on a host, should this
// ever regress.)
func TestDeleteRefusesAMissingOrInvalidNamespace(t *testing.T) {
	bundle := t.TempDir()
	for _, f := range []Flags{
		{ID: "shim-test-absent-ns", Bundle: bundle},
		{Namespace: "..", ID: "shim-test-absent-ns", Bundle: bundle},
		{Namespace: "a/b", ID: "t1", Bundle: bundle},
		{Namespace: "ns", ID: "..", Bundle: bundle},
		{Namespace: "ns", ID: "../t1", Bundle: bundle},
	} {
		var out bytes.Buffer
		err := Delete(f, &out)
		if err == nil || out.Len() != 0 {
			t.Errorf("delete -namespace %q -id %q: error %v, printed %d bytes; want refused with nothing printed",
				f.Namespace, f.ID, err, out.Len())
		}
	}
}

// containerd runs `delete` with its own environment only: what an operator
// gives shims in [plugins."io.containerd.shim.v1.manager"] env reaches
// `start`, and so the daemon, but not `delete`. A runtime the daemon found
// through a PATH given there must still be the one `delete` runs, or the
// container of a killed daemon is left running with its runtime state.
func TestDeleteRunsTheRuntimeTheDaemonFound(t *testing.T) {
	dir := t.TempDir()
	bin, bundle, root := filepath.Join(dir, "bin"), filepath.Join(dir, "bundle"), filepath.Join(dir, "root")
	for _, d := range []string{bin, filepath.Join(bundle, "rootfs"), filepath.Join(root, "t1")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	called := filepath.Join(dir, "called")
	name := "shim-test-runtime-" + filepath.Base(filepath.Dir(dir))
	script := "#!/bin/sh\necho \"$@\" > " + called + "\n"
	if err := os.WriteFile(filepath.Join(bin, name), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	containerdPath := os.Getenv("PATH")
	// The daemon's environment: containerd's, with the shims' own PATH.
	t.Setenv("PATH", bin+":"+containerdPath)
	if err := (&oci.Runtime{Binary: name, Root: root}).Save(bundle); err != nil {
		t.Fatal(err)
	}
	// delete's: containerd's alone.
	t.Setenv("PATH", containerdPath)
	var out bytes.Buffer
	if err := Delete(Flags{Namespace: "ns", ID: "t1", Bundle: bundle}, &out); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(called)
	if err != nil {
		t.Fatalf("delete did not run the runtime %s the container was made with: %v", name, err)
	}
	if !strings.HasSuffix(strings.TrimSpace(string(got)), "delete --force t1") {
		t.Fatalf("the runtime ran with %q, want a forced delete of t1", got)
	}
}
