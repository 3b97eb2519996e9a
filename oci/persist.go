package oci

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

// persistFile records, in the bundle, which runtime command line created the
// container, so that the shim's `delete` command (run by containerd after the
// daemon is gone) cleans up with the same binary and root.
const persistFile = "runtime.json"

type persisted struct {
	Binary string `json:"binary,omitempty"`
	// Path is the executable the daemon's search found for Binary (or for
	// the default runtime). containerd runs `delete` with its own
	// environment only: what an operator gives shims through
	// [plugins."io.containerd.shim.v1.manager"] env (a PATH among it)
	// reaches `start`, and so the daemon, but never `delete`, which by name
	// alone would not find a runtime found there and would leave a killed
	// daemon's container running. Binary stays, for a path since removed.
	Path          string `json:"path,omitempty"`
	Root          string `json:"root,omitempty"`
	SystemdCgroup bool   `json:"systemd_cgroup,omitempty"`
}

// Save writes the runtime's identity into bundle.
func (r *Runtime) Save(bundle string) error {
	p := persisted{Binary: r.Binary, Root: r.Root, SystemdCgroup: r.SystemdCgroup}
	if path, err := exec.LookPath(r.BinaryOrDefault()); err == nil && filepath.IsAbs(path) {
		p.Path = path
	}
	data, err := json.Marshal(p)
	if err != nil {
		return fmt.Errorf("encode runtime record: %w", err)
	}
	if err := os.WriteFile(filepath.Join(bundle, persistFile), data, 0o600); err != nil {
		return fmt.Errorf("write runtime record: %w", err)
	}
	return nil
}

// Load reads the runtime recorded in bundle. A missing record (the task never
// got as far as Create) yields the defaults with the given root.
func Load(bundle, defaultRoot string) (Runtime, error) {
	r := Runtime{Root: defaultRoot, Dir: bundle, LogPath: filepath.Join(bundle, "log.json")}
	data, err := os.ReadFile(filepath.Join(bundle, persistFile))
	if errors.Is(err, os.ErrNotExist) {
		return r, nil
	}
	if err != nil {
		return r, fmt.Errorf("read runtime record: %w", err)
	}
	var p persisted
	if err := json.Unmarshal(data, &p); err != nil {
		return r, fmt.Errorf("decode runtime record: %w", err)
	}
	r.Binary, r.SystemdCgroup = p.Binary, p.SystemdCgroup
	if p.Path != "" && isExecutable(p.Path) {
		r.Binary = p.Path
	}
	if p.Root != "" {
		r.Root = p.Root
	}
	return r, nil
}

// isExecutable reports whether path is a regular file someone may execute.
func isExecutable(path string) bool {
	st, err := os.Stat(path)
	return err == nil && st.Mode().IsRegular() && st.Mode().Perm()&0o111 != 0
}
