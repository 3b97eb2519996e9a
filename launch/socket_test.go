package launch

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestSocketPathIsPerGroupAndShort(t *testing.T) {
	a, err := SocketPath(DefaultSocketDir, "/run/containerd/containerd.sock", "k8s.io", "pod1")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := SocketPath(DefaultSocketDir, "/run/containerd/containerd.sock", "k8s.io", "pod2")
	c, _ := SocketPath(DefaultSocketDir, "/other/containerd.sock", "k8s.io", "pod1")
	if a == b || a == c {
		t.Fatalf("socket paths collide: %s %s %s", a, b, c)
	}
	if len(a) > maxSocketPath || !strings.HasPrefix(a, DefaultSocketDir+"/") {
		t.Fatalf("bad socket path %s", a)
	}
	if _, err := SocketPath(strings.Repeat("/x", 30), "a", "b", "c"); err == nil {
		t.Fatal("over-long socket path accepted")
	}
}

func TestListenReusesLiveAndReplacesStaleSocket(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "s", "sock")
	l, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("socket mode %v (%v)", st.Mode(), err)
	}
	dst, _ := os.Stat(filepath.Dir(path))
	if dst.Mode().Perm() != 0o700 {
		t.Fatalf("socket dir mode %v", dst.Mode())
	}
	if _, err := Listen(path); !errors.Is(err, ErrDaemonRunning) {
		t.Fatalf("second Listen on a live socket: %v, want ErrDaemonRunning", err)
	}
	l.Close() // the file stays (SetUnlinkOnClose(false)) and is now stale
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("socket file gone after close: %v", err)
	}
	l2, err := Listen(path)
	if err != nil {
		t.Fatalf("Listen over a stale socket: %v", err)
	}
	defer l2.Close()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatalf("dial new socket: %v", err)
	}
	c.Close()
}

// Two starts of one group at once: exactly one binds the socket, the other
// finds its daemon running, and the socket file is the winner's. Between
// bind and listen the file refuses connections, and an unserialized second
// start took it for a stale socket, removed it and bound its own.
func TestConcurrentListenBindsOnce(t *testing.T) {
	dir := t.TempDir()
	for round := 0; round < 300; round++ {
		path := filepath.Join(dir, fmt.Sprint(round))
		type result struct {
			l   *net.UnixListener
			err error
		}
		results := make(chan result, 2)
		for i := 0; i < 2; i++ {
			go func() {
				l, err := Listen(path)
				results <- result{l, err}
			}()
		}
		var won []*net.UnixListener
		for i := 0; i < 2; i++ {
			r := <-results
			switch {
			case r.err == nil:
				won = append(won, r.l)
			case !errors.Is(r.err, ErrDaemonRunning):
				t.Fatalf("round %d: %v", round, r.err)
			}
		}
		if len(won) != 1 {
			t.Fatalf("round %d: %d starts bound the group's socket, want 1", round, len(won))
		}
		won[0].SetDeadline(time.Now().Add(5 * time.Second))
		c, err := net.Dial("unix", path)
		if err != nil {
			t.Fatalf("round %d: the socket file does not reach the winner: %v", round, err)
		}
		if a, err := won[0].Accept(); err != nil {
			t.Fatalf("round %d: the winner got no connection through the socket file: %v", round, err)
		} else {
			a.Close()
		}
		c.Close()
		won[0].Close()
	}
}

// A daemon leaving removes its socket file only if it is still the one it
// was started on: a new start of the group may have bound the path since the
// daemon closed its listener.
func TestDaemonRemovesOnlyItsOwnSocketFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s", "sock")
	old, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	own := ownSocketFile(path)
	old.Close()
	// A daemon lives longer than a tick of the file system's coarse clock:
	// the next file's change time differs even if its inode number does not.
	time.Sleep(20 * time.Millisecond)
	next, err := Listen(path) // the old file is stale now: replaced
	if err != nil {
		t.Fatal(err)
	}
	defer next.Close()
	own.remove()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatalf("the new daemon's socket file was removed by the old daemon: %v", err)
	}
	c.Close()
	ownSocketFile(path).remove()
	if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a daemon's own socket file is left at exit: %v", err)
	}
}

func TestReadBundleGroup(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct {
		config   string // "": none
		group    string
		announce bool // start tells a running daemon the task is coming (Join)
	}{
		{"", "c1", true},
		// A CRI pod's daemon is not told: CRI removes the pod last.
		{`{"annotations":{"io.kubernetes.cri.sandbox-id":"pod"}}`, "pod", false},
		// Our own group annotation wins over the others.
		{`{"annotations":{"io.kubernetes.cri.sandbox-id":"pod","io.example.v2.group":"mine"}}`, "mine", true},
		{`{"annotations":{"io.containerd.runc.v2.group":"theirs","io.example.v2.group":"mine"}}`, "mine", true},
		// The stock shim's: after ours, before CRI's, marked so that its
		// socket is not the one the stock shim computes for the same group.
		{`{"annotations":{"io.kubernetes.cri.sandbox-id":"pod","io.containerd.runc.v2.group":"theirs"}}`, stockGroupDomain + "theirs", true},
		{`not json`, "c1", true},
		// Any group that is one path element is kept as given (runc accepts
		// such ids; containerd's own are stricter).
		{`{"annotations":{"io.example.v2.group":"pod+1:a"}}`, "pod+1:a", true},
	} {
		os.Remove(filepath.Join(dir, "config.json"))
		if c.config != "" {
			if err := os.WriteFile(filepath.Join(dir, "config.json"), []byte(c.config), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		b, err := readBundle(dir, "c1")
		if err != nil || b.group != c.group || b.announce != c.announce || b.hasSpec != (c.config != "") {
			t.Errorf("config %s: %+v, %v; want group %q, announce %v", c.config, b, err, c.group, c.announce)
		}
	}
	ours, _ := SocketPath(DefaultSocketDir, "/run/containerd/containerd.sock", "default", stockGroupDomain+"theirs")
	stock, _ := SocketPath(DefaultSocketDir, "/run/containerd/containerd.sock", "default", "theirs")
	if ours == stock {
		t.Fatalf("a group by the stock annotation gets the stock shim's socket %s", stock)
	}
}

// A group is a name within the task's namespace. The socket is named after
// the hash of a cleaned path, so a group that walks out of its element
// ("../other-ns/<id>") would hand this task to another namespace's daemon:
// start refuses it.
func TestReadBundleRefusesAGroupOutsideItsNamespace(t *testing.T) {
	dir := t.TempDir()
	for _, key := range []string{"io.example.v2.group", "io.containerd.runc.v2.group", "io.kubernetes.cri.sandbox-id"} {
		for _, g := range []string{"../other-ns/web1", "a/b", "..", ".", `x\u0000y`} {
			spec := `{"annotations":{"` + key + `":"` + g + `"}}`
			if err := os.WriteFile(filepath.Join(dir, "config.json"), []byte(spec), 0o600); err != nil {
				t.Fatal(err)
			}
			if got, err := readBundle(dir, "c1"); err == nil {
				t.Errorf("%s %q accepted as %q", key, g, got.group)
			}
		}
	}
}

// containerd 2.3+ accepts a shim socket_dir of up to 42 bytes on Linux
// (core/runtime/v2/socket_linux.go: 107 usable bytes of sun_path, less "/"
// and 64 hex digits) and the stock shim binds its socket there: so does
// this one.
func TestSocketInTheLongestSocketDirContainerdAccepts(t *testing.T) {
	base, err := os.MkdirTemp("/tmp", "sd")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(base)
	dir := filepath.Join(base, strings.Repeat("d", 42-len(base)-1))
	path, err := SocketPath(dir, "/run/containerd/containerd.sock", "default", "c1")
	if err != nil {
		t.Fatalf("socket dir of %d bytes: %v", len(dir), err)
	}
	l, err := Listen(path)
	if err != nil {
		t.Fatalf("listen on %s (%d bytes): %v", path, len(path), err)
	}
	defer l.Close()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatalf("dial %s: %v", path, err)
	}
	c.Close()
	if _, err := SocketPath(dir+"d", "/run/containerd/containerd.sock", "default", "c1"); err == nil {
		t.Errorf("a socket dir of 43 bytes accepted: its socket path has no room for the NUL")
	}
}
