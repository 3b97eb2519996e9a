package launch

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/example/containerd-shim-example-v2/handover"
)

// The binary's answer to a daemon's preflight names its build and accepts
// the state this build writes.
func TestHelloAcceptsOwnState(t *testing.T) {
	var b bytes.Buffer
	if err := Hello(&b); err != nil {
		t.Fatal(err)
	}
	var h handover.Hello
	if err := json.Unmarshal(b.Bytes(), &h); err != nil {
		t.Fatalf("hello %q: %v", b.String(), err)
	}
	if h.Version != Version || h.Revision != Revision {
		t.Errorf("hello names %s/%s, want %s/%s", h.Version, h.Revision, Version, Revision)
	}
	if err := h.Accepts(handover.StateVersion); err != nil {
		t.Error(err)
	}
}
