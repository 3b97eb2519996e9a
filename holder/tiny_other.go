//go:build !amd64

package holder

// tinyHolder has no machine code for this architecture: the holder is this
// binary itself (see Main).
func tinyHolder() []byte { return nil }
