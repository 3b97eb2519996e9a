// Package bundle owns the files the shim keeps in a task's bundle directory
// (the directory containerd made for the task): `address`, `shim.pid`, and
// the atomic-write rule they all follow, so that containerd or the shim's
// own `delete`, reading after a crash or restart, never sees half a file.
package bundle

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
)

// File names inside a bundle.
const (
	AddressFile = "address"  // the daemon's ttrpc address; containerd 1.6 reconnects with it
	ShimPidFile = "shim.pid" // the daemon's PID
)

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

// WriteShimPid records the daemon's PID in dir.
func WriteShimPid(dir string, pid int) error {
	return WriteFileAtomic(filepath.Join(dir, ShimPidFile), []byte(strconv.Itoa(pid)), 0o644)
}
