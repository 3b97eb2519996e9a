package oci

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// persistFile records, in the bundle, which runtime command line created the
// container, so that the shim's `delete` command (run by containerd after the
// daemon is gone) cleans up with the same binary and root.
const persistFile = "runtime.json"

type persisted struct {
	Binary        string `json:"binary,omitempty"`
	Root          string `json:"root,omitempty"`
	SystemdCgroup bool   `json:"systemd_cgroup,omitempty"`
}

// Save writes the runtime's identity into bundle.
func (r *Runtime) Save(bundle string) error {
	data, err := json.Marshal(persisted{Binary: r.Binary, Root: r.Root, SystemdCgroup: r.SystemdCgroup})
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
	if p.Root != "" {
		r.Root = p.Root
	}
	return r, nil
}
