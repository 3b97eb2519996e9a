package service

import (
	"fmt"
	"os"
	"syscall"
)

// bundleID is a bundle directory's identity. Two paths to one directory (a
// symlink, a bind mount) are one bundle: two tasks in it would overwrite
// each other's files (init.pid, init.exit, address, the runtime's log).
// Service.bundles holds the identity of every task's bundle, those being
// created included, under Service.mu.
type bundleID struct{ dev, ino uint64 }

// identifyBundle returns the identity of the directory bundle names.
func identifyBundle(bundle string) (bundleID, error) {
	st, err := os.Stat(bundle)
	if err != nil {
		return bundleID{}, invalidArgument("bundle %s: %v", bundle, err)
	}
	sys, ok := st.Sys().(*syscall.Stat_t)
	if !ok {
		return bundleID{}, fmt.Errorf("bundle %s: no device and inode numbers", bundle)
	}
	return bundleID{dev: uint64(sys.Dev), ino: sys.Ino}, nil
}

// bundleHolderLocked returns the task whose bundle is b, if any. s.mu must
// be held.
func (s *Service) bundleHolderLocked(b bundleID) (string, bool) {
	for id, held := range s.bundles {
		if held == b {
			return id, true
		}
	}
	return "", false
}
