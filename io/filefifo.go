package io

import "os"

// namesFIFO reports whether a file:// log names an existing FIFO and asks
// for nothing but raw bytes (no format, rotation or pace). Such a "log" is
// someone's reader, and it is opened as a client's FIFO is (openOutput):
// writing waits, in the background, for a reader to come, as containerd's own
// shim does for a file:// path that is a FIFO. Opened as a log file, for
// writing, it would block the request in open(2) until a reader came, for
// ever if none does.
func namesFIFO(o FileOptions) bool {
	if o.CRI || o.MaxSize > 0 || o.Rate > 0 {
		return false
	}
	st, err := os.Stat(o.Path)
	return err == nil && st.Mode().Type() == os.ModeNamedPipe
}
