package launch

import (
	"encoding/json"
	"io"

	"github.com/example/containerd-shim-example-v2/handover"
)

// Hello answers handover.HelloAction: the binary's build and the state
// layouts it can take over from a running daemon (issue 14's preflight; the
// upgrade itself is not wired into the daemon yet, see docs/upgrade.md).
func Hello(w io.Writer) error {
	return json.NewEncoder(w).Encode(handover.OwnHello(handover.Build{Version: Version, Revision: Revision}))
}
