package launch

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
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

func TestReadBundleGroup(t *testing.T) {
	dir := t.TempDir()
	write := func(s string) { os.WriteFile(filepath.Join(dir, "config.json"), []byte(s), 0o600) }
	if g, _ := readBundle(dir, "c1"); g != "c1" {
		t.Fatalf("no config: group %q", g)
	}
	write(`{"annotations":{"io.kubernetes.cri.sandbox-id":"pod"}}`)
	if g, _ := readBundle(dir, "c1"); g != "pod" {
		t.Fatalf("sandbox group %q", g)
	}
	write(`{"annotations":{"io.kubernetes.cri.sandbox-id":"pod","io.example.v2.group":"mine"}}`)
	if g, _ := readBundle(dir, "c1"); g != "mine" {
		t.Fatalf("own group annotation must win: %q", g)
	}
	write(`not json`)
	if g, _ := readBundle(dir, "c1"); g != "c1" {
		t.Fatalf("bad config: group %q", g)
	}
}
