// Package bundle owns the files the shim keeps in a task's bundle directory
// (the directory containerd made for the task): `address`, `shim.pid`, and
// the atomic-write rule they all follow, so that containerd or the shim's
// own `delete`, reading after a crash or restart, never sees half a file.
package bundle

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"
)

// File names inside a bundle.
const (
	AddressFile = "address"  // the daemon's ttrpc address; containerd 1.6 reconnects with it
	ShimPidFile = "shim.pid" // the daemon's PID
	InitPidFile = "init.pid" // the init's PID, written by the runtime
	RootfsDir   = "rootfs"   // where the shim mounts the container's root filesystem
)

// ExecPidFile is the file the runtime writes an exec's PID to. The prefix
// keeps exec IDs such as "init" or "shim" off the bundle's own files.
func ExecPidFile(execID string) string { return "exec-" + execID + ".pid" }

// WriteFileAtomic writes data to path through a temporary file in the same
// directory and a rename.
func WriteFileAtomic(path string, data []byte, perm os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	_, err = tmp.Write(data)
	if err == nil {
		err = tmp.Chmod(perm)
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// WriteAddress records the daemon's address in dir.
func WriteAddress(dir, address string) error {
	return WriteFileAtomic(filepath.Join(dir, AddressFile), []byte(address), 0o644)
}

// EnsureAddress records the daemon's address in dir unless `start` already
// did (it writes it for every task it launches).
func EnsureAddress(dir, address string) error {
	if _, err := os.Stat(filepath.Join(dir, AddressFile)); err == nil {
		return nil
	}
	return WriteAddress(dir, address)
}

// WriteShimPid records the daemon's PID in dir.
func WriteShimPid(dir string, pid int) error {
	return WriteFileAtomic(filepath.Join(dir, ShimPidFile), []byte(strconv.Itoa(pid)), 0o644)
}

// ExitFile holds the init's exit, recorded before its exit event is
// published, so that `delete` can report the real status after the daemon
// died instead of a made-up one.
const ExitFile = "init.exit"

// Exit is a recorded process exit.
type Exit struct {
	Pid      int       `json:"pid"`
	Status   int       `json:"status"`
	ExitedAt time.Time `json:"exited_at"`
}

// WriteExit records an exit, atomically. It is not fsynced on purpose: the
// record must outlive the shim process (the page cache does), not the
// machine, whose crash takes the containers and, usually, the tmpfs bundle
// with it; a sync would put a disk flush on every exit's path.
func WriteExit(dir string, e Exit) error {
	data, err := json.Marshal(e)
	if err != nil {
		return fmt.Errorf("encode exit record: %w", err)
	}
	return WriteFileAtomic(filepath.Join(dir, ExitFile), data, 0o600)
}

// ReadExit reads the recorded exit; ok is false when none was recorded.
func ReadExit(dir string) (e Exit, ok bool, err error) {
	data, err := os.ReadFile(filepath.Join(dir, ExitFile))
	if errors.Is(err, os.ErrNotExist) {
		return e, false, nil
	}
	if err != nil {
		return e, false, fmt.Errorf("read exit record: %w", err)
	}
	if err := json.Unmarshal(data, &e); err != nil {
		return e, false, fmt.Errorf("decode exit record: %w", err)
	}
	return e, true, nil
}
