package oci

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"

	"github.com/containerd/errdefs"
)

// criuLinkDir is the bundle's directory holding the link named criu to a
// CRIU binary of another name (withCRIU).
const criuLinkDir = "criu-bin"

// withCRIU returns the runtime as a checkpoint or restore runs it: with the
// CRIU binary r.Criu names first in its PATH, as "criu". runc 1.1 took that
// binary as its --criu flag, 1.2 to 1.4 ignore the flag and 1.5 refuses it
// (every command fails); each of them, and crun's libcriu, runs the criu
// its PATH finds. A binary of another name is linked as criu from the
// bundle (criu-bin).
func (r *Runtime) withCRIU() (*Runtime, error) {
	if r.Criu == "" {
		return r, nil
	}
	path, err := exec.LookPath(r.Criu) // an absolute path is checked as it is
	if err != nil {
		return nil, fmt.Errorf("criu_path %q: %v: %w", r.Criu, err, errdefs.ErrInvalidArgument)
	}
	if path, err = filepath.Abs(path); err != nil {
		return nil, fmt.Errorf("criu_path %q: %w", r.Criu, err)
	}
	dir := filepath.Dir(path)
	if filepath.Base(path) != "criu" {
		if r.Dir == "" {
			return nil, fmt.Errorf("criu_path %q: no bundle to link it as criu from: %w", r.Criu, errdefs.ErrFailedPrecondition)
		}
		dir = filepath.Join(r.Dir, criuLinkDir)
		if err := linkAsCRIU(dir, path); err != nil {
			return nil, fmt.Errorf("criu_path %q: %w", r.Criu, err)
		}
	}
	with := *r
	with.pathFirst = dir
	return &with, nil
}

// linkAsCRIU makes dir/criu a link to path, replacing an earlier one.
func linkAsCRIU(dir, path string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	link := filepath.Join(dir, "criu")
	if target, err := os.Readlink(link); err == nil && target == path {
		return nil
	}
	if err := os.Remove(link); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return os.Symlink(path, link)
}
