package launch

import "github.com/example/containerd-shim-example-v2/holder"

// HolderAction is the hidden action a pod's namespace holder runs as: the
// sandbox service starts this binary with it (see the holder package).
const HolderAction = holder.Action

// RunHolder is the holder process; it returns when the pod is gone.
func RunHolder() error { return holder.Main() }
