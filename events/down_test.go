package events

import (
	"net"
	"path/filepath"
	"testing"
)

// Down tells a socket nobody listens on (refused, or gone) from one that
// accepts, and knows nothing of an empty address.
func TestDown(t *testing.T) {
	path := filepath.Join(t.TempDir(), "containerd.sock.ttrpc")
	if !Down("unix://" + path) {
		t.Error("a socket that does not exist is not down")
	}
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	if Down("unix://"+path) || Down(path) {
		t.Error("a listening socket is down")
	}
	l.Close() // the socket file stays, as a killed containerd leaves it
	if !Down(path) {
		t.Error("a socket whose listener is gone is not down")
	}
	if Down("") {
		t.Error("an empty address is down")
	}
}
