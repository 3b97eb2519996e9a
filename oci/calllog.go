package oci

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

// maxCallLog bounds what is read of one invocation's log.
const maxCallLog = 1 << 20

// callLog is the JSON log of one runtime invocation: a file of its own next
// to the container's log, which gets its lines once the invocation ends.
// The runtime's JSON lines name no invocation, so a failed call reading the
// shared log could only take the last error appended since it began, and
// with calls overlapping (an exec's start as a kill or a pause comes) that
// was another call's: a pause answered with the exec's error.
type callLog struct {
	path   string // the invocation's own log ("": none)
	shared string // the container's log
}

func (r *Runtime) newCallLog() callLog {
	if r.LogPath == "" {
		return callLog{}
	}
	// Calls overlap, in this daemon and in a daemon that died mid-call
	// leaving its file: the time and 64 random bits make a name no other
	// call has, with no counter shared by every Runtime.
	name := fmt.Sprintf(".%s.%d-%x", filepath.Base(r.LogPath), time.Now().UnixNano(), rand.Uint64())
	return callLog{path: filepath.Join(filepath.Dir(r.LogPath), name), shared: r.LogPath}
}

// finish appends the invocation's lines to the container's log, removes its
// own, and returns the message of its last error-level entry ("" if none).
func (l callLog) finish() string {
	if l.path == "" {
		return ""
	}
	data, err := os.ReadFile(l.path)
	if err != nil {
		return "" // the runtime never ran, or wrote nothing
	}
	os.Remove(l.path)
	if len(data) > maxCallLog {
		data = data[len(data)-maxCallLog:]
	}
	if len(data) > 0 {
		// One write: O_APPEND keeps it whole among other calls' appends.
		if f, err := os.OpenFile(l.shared, os.O_WRONLY|os.O_APPEND|os.O_CREATE|unix.O_CLOEXEC, 0o644); err == nil {
			_, _ = f.Write(data)
			f.Close()
		}
	}
	return lastError(data)
}

// lastError returns the message of the last error-level entry of a JSON log.
func lastError(data []byte) string {
	var last string
	for _, line := range bytes.Split(data, []byte("\n")) {
		var entry struct {
			Level string `json:"level"`
			Msg   string `json:"msg"`
		}
		if json.Unmarshal(line, &entry) == nil && (entry.Level == "error" || entry.Level == "fatal") && entry.Msg != "" {
			last = entry.Msg
		}
	}
	return last
}
