package holder

import "github.com/example/containerd-shim-example-v2/internal/selftrim"

// trim gives back what the holder needed only to start: free heap, and the
// pages of its own executable (the whole shim binary, of which a waiting
// holder runs a few functions). Those stay in the page cache, shared with
// the shim; the holder faults back in the little it uses.
func trim() { selftrim.Trim() }
