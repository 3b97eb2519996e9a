package io

import (
	"path/filepath"
	"time"
)

// streamFIFOs opens the client's FIFOs of a process's output streams. When
// stdout and stderr name the same FIFO, both relays write through one
// clientFIFO: one wait for the client's reader, one write end, closed when
// the second relay is done. With a clientFIFO each, a client whose reader
// came late (after the process wrote) was woken with two writers still in
// open(2): the first to be done closed its end before the other had
// counted as a writer, the reader saw end of file and left, and what the
// other stream wrote went nowhere.
type streamFIFOs struct {
	path string
	f    *clientFIFO
}

// open opens (or shares) the output at path, named by uri, for stream
// (path "": not shared).
func (s *streamFIFOs) open(uri, path, stream string, attachTimeout time.Duration) (output, error) {
	if path != "" {
		path = filepath.Clean(path)
	}
	if path != "" && s.f != nil && s.path == path {
		s.f.addUser()
		return s.f, nil
	}
	dst, err := openOutput(uri, stream, attachTimeout)
	if err != nil {
		return nil, err
	}
	if f, ok := dst.(*clientFIFO); ok && path != "" {
		s.path, s.f = path, f
	}
	return dst, nil
}

// addUser makes one more relay write through f: Close ends f only once it
// has been called once more than addUser was (see Close).
func (f *clientFIFO) addUser() {
	f.mu.Lock()
	f.extraUsers++
	f.mu.Unlock()
}
