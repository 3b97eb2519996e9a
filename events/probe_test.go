package events

import (
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// Probe tells a socket nobody listens on (refused, or gone) from one that
// accepts, and dates a listening socket by when it was made: a socket made
// again (a restart) is newer.
func TestProbe(t *testing.T) {
	path := filepath.Join(t.TempDir(), "containerd.sock.ttrpc")
	if down, _ := Probe("unix://" + path); !down {
		t.Error("a socket that does not exist is not down")
	}
	listen := func() *net.UnixListener {
		l, err := net.Listen("unix", path)
		if err != nil {
			t.Fatal(err)
		}
		ul := l.(*net.UnixListener)
		ul.SetUnlinkOnClose(false)
		return ul
	}
	l := listen()
	down, first := Probe("unix://" + path)
	if down || first.IsZero() || time.Since(first) > time.Minute {
		t.Errorf("a listening socket: down %v, up since %v", down, first)
	}
	if down, _ := Probe(path); down {
		t.Error("a listening socket named without unix:// is down")
	}
	l.Close() // the socket file stays, as a killed containerd leaves it
	if down, _ := Probe(path); !down {
		t.Error("a socket whose listener is gone is not down")
	}
	time.Sleep(20 * time.Millisecond)
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	l = listen() // containerd started again
	defer l.Close()
	if down, again := Probe(path); down || !again.After(first) {
		t.Errorf("a socket made again: down %v, up since %v, want after %v", down, again, first)
	}
	if down, since := Probe(""); down || !since.IsZero() {
		t.Error("an empty address is down or dated")
	}
}
