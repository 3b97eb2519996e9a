package process

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// The shim reads only the parts of OCI specs it acts on; the runtime reads
// and checks the whole. Decoding a whole specs.Spec would leave the JSON
// decoder's cache of every spec type (about 150 KiB) in each shim for good,
// and cost each Create the time to build it.

// bundleSpec is the part of a bundle's config.json the shim uses.
type bundleSpec struct {
	Process *struct {
		Args     []string `json:"args"`
		Terminal bool     `json:"terminal"`
	} `json:"process"`
	Linux *struct {
		Namespaces  []specs.LinuxNamespace `json:"namespaces"`
		CgroupsPath string                 `json:"cgroupsPath"`
	} `json:"linux"`
}

// readSpec reads and checks the bundle's config.json.
func readSpec(bundle string) (*bundleSpec, error) {
	data, err := os.ReadFile(filepath.Join(bundle, "config.json"))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("bundle %s has no config.json: %w", bundle, errdefs.ErrInvalidArgument)
		}
		return nil, fmt.Errorf("read config.json: %w", err)
	}
	var spec bundleSpec
	if err := json.Unmarshal(data, &spec); err != nil {
		return nil, fmt.Errorf("config.json of %s is not a valid OCI spec: %v: %w", bundle, err, errdefs.ErrInvalidArgument)
	}
	if spec.Process == nil || len(spec.Process.Args) == 0 {
		return nil, fmt.Errorf("config.json of %s has no process args: %w", bundle, errdefs.ErrInvalidArgument)
	}
	return &spec, nil
}

// cgroupsPath is the spec's linux.cgroupsPath ("" for none).
func cgroupsPath(spec *bundleSpec) string {
	if spec.Linux == nil {
		return ""
	}
	return spec.Linux.CgroupsPath
}

// hasOwnNamespace reports whether the spec gives the container a new
// namespace of type t (not one it joins by path).
func hasOwnNamespace(spec *bundleSpec, t specs.LinuxNamespaceType) bool {
	if spec.Linux == nil {
		return false
	}
	for _, ns := range spec.Linux.Namespaces {
		if ns.Type == t && ns.Path == "" {
			return true
		}
	}
	return false
}

// execProcessFields are the typed fields of an OCI Process an exec's spec
// is checked against (small leaf types only: see bundleSpec).
type execProcessFields struct {
	Terminal        bool                     `json:"terminal"`
	ConsoleSize     *specs.Box               `json:"consoleSize"`
	User            specs.User               `json:"user"`
	Env             []string                 `json:"env"`
	Cwd             string                   `json:"cwd"`
	Capabilities    *specs.LinuxCapabilities `json:"capabilities"`
	Rlimits         []specs.POSIXRlimit      `json:"rlimits"`
	NoNewPrivileges bool                     `json:"noNewPrivileges"`
	ApparmorProfile string                   `json:"apparmorProfile"`
	OOMScoreAdj     *int                     `json:"oomScoreAdj"`
	SelinuxLabel    string                   `json:"selinuxLabel"`
}

// execProcessSpec checks an exec's OCI process spec (a JSON object with
// args) and returns it with "terminal" set as the client's stdio says; the
// other fields pass through to the runtime untouched.
func execProcessSpec(spec []byte, terminal bool) ([]byte, error) {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(spec, &fields); err != nil {
		return nil, fmt.Errorf("process spec is not valid JSON: %v: %w", err, errdefs.ErrInvalidArgument)
	}
	var args []string
	if raw, ok := fields["args"]; ok {
		if err := json.Unmarshal(raw, &args); err != nil {
			return nil, fmt.Errorf("process spec args: %v: %w", err, errdefs.ErrInvalidArgument)
		}
	}
	if len(args) == 0 {
		return nil, fmt.Errorf("process spec has no args: %w", errdefs.ErrInvalidArgument)
	}
	// The fields the runtime decodes strictly, with their types: a spec
	// that does not decode as a Process is refused here, not by the
	// runtime's Start as an Unknown error.
	var typed execProcessFields
	if err := json.Unmarshal(spec, &typed); err != nil {
		return nil, fmt.Errorf("process spec is not an OCI Process: %v: %w", err, errdefs.ErrInvalidArgument)
	}
	if typed.Cwd != "" && !filepath.IsAbs(typed.Cwd) {
		// The OCI spec: cwd MUST be an absolute path.
		return nil, fmt.Errorf("process spec cwd %q is not an absolute path: %w", typed.Cwd, errdefs.ErrInvalidArgument)
	}
	fields["terminal"] = json.RawMessage(strconv.FormatBool(terminal))
	return json.Marshal(fields)
}
