package cgroup

import (
	"bytes"
	"os"
	"path/filepath"
	"sync"

	"github.com/example/containerd-shim-example-v2/internal/rawfile"
)

// Reading the kernel's small cgroup files without allocating per file. os.ReadFile makes an
// *os.File (with its poller state) and a fresh buffer for each file (cgroupfs reports size
// 0, so 512 bytes grown by doubling): a v1 statistics answer, about 25 files, allocated
// 56 KB here. containerd 2.4's CRI asks for one per pod and per container every second,
// and that garbage set how fast a polled shim's heap grew between collections. These
// readers use raw file descriptors and pooled buffers (10 KB per answer, most of it the
// answer itself, the paths and memory.stat's map).

// readBufSize fits every statistics file of a cgroup with a few block devices (memory.stat
// is the longest common one, about 1.5 KB under v1); a longer file grows the buffer.
const readBufSize = 4096

// maxPooledBuf keeps a buffer grown by an unusually long file (io.stat of a host with many
// devices) out of the pool.
const maxPooledBuf = 64 << 10

var readBufs = sync.Pool{New: func() any { b := make([]byte, readBufSize); return &b }}

// withFile reads the whole file at path into a pooled buffer and calls fn with its
// content, which is valid only during the call. Its error names the file.
func withFile(path string, fn func(data []byte)) error {
	if err := withFileIn(fn, filepath.Dir(path), filepath.Base(path)); err != nil {
		return &os.PathError{Op: "read", Path: path, Err: err}
	}
	return nil
}

// withFileIn is withFile of dir/parts... (parts concatenated) with the path built on the
// stack: the statistics readers poll a few dozen files a second per container, and a path
// string per file was a third of what an answer allocated. Its error is the bare errno.
func withFileIn(fn func(data []byte), dir string, parts ...string) error {
	bp := readBufs.Get().(*[]byte)
	data, grown, err := rawfile.ReadIn(*bp, dir, parts...)
	if cap(grown) <= maxPooledBuf {
		*bp = grown // the buffer as the read grew it goes back to the pool
		defer readBufs.Put(bp)
	}
	if err != nil {
		return err
	}
	fn(data)
	return nil
}

// readUintIn reads a one-number file (a counter, a limit or "max") under dir.
func readUintIn(dir string, parts ...string) (uint64, error) {
	return uintOf(func(fn func([]byte)) error { return withFileIn(fn, dir, parts...) })
}

// uintOf parses the one number of the file read reads.
func uintOf(read func(fn func([]byte)) error) (uint64, error) {
	var v uint64
	var perr error
	if err := read(func(data []byte) { v, perr = parseUint(string(bytes.TrimSpace(data))) }); err != nil {
		return 0, err
	}
	return v, perr
}

// eachKV calls fn for each "key value" line of dir/name (memory.stat, cpu.stat,
// memory.events, ...) whose value parses; key is valid only during the call. Unlike
// readKV it builds no map: the statistics readers switch on the key.
func eachKV(fn func(key []byte, v uint64), dir string, parts ...string) error {
	return withFileIn(func(data []byte) { parseKV(data, fn) }, dir, parts...)
}

// parseKV calls fn for each "key value" line of data whose value parses.
func parseKV(data []byte, fn func(key []byte, v uint64)) {
	eachLine(data, func(line []byte) {
		k, v, ok := bytes.Cut(bytes.TrimSpace(line), space)
		if !ok {
			return
		}
		if n, err := parseUint(string(bytes.TrimSpace(v))); err == nil {
			fn(k, n)
		}
	})
}

// eachLine calls fn with each line of data, without its newline.
func eachLine(data []byte, fn func(line []byte)) {
	for len(data) > 0 {
		var line []byte
		line, data, _ = bytes.Cut(data, newline)
		fn(line)
	}
}

var newline, space = []byte{'\n'}, []byte{' '}

// readString is the file's content as a string (one allocation of its length).
func readString(path string) (string, error) {
	var s string
	err := withFile(path, func(data []byte) { s = string(data) })
	return s, err
}

func readUint(path string) (uint64, error) {
	return uintOf(func(fn func([]byte)) error { return withFile(path, fn) })
}

// readKV reads "key value" lines (memory.events, memory.oom_control) into a
// map, for the callers off the polling path (OOM kills and their scope).
func readKV(path string) (map[string]uint64, error) {
	out := make(map[string]uint64)
	err := withFile(path, func(data []byte) {
		parseKV(data, func(k []byte, v uint64) { out[string(k)] = v })
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}
