package service

import (
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"time"

	runcopts "github.com/example/containerd-shim-example-v2/proto/api/types/runc/options"
	criopts "github.com/example/containerd-shim-example-v2/proto/api/types/runtimeoptions/v1"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/example/containerd-shim-example-v2/proto/codec"
	exampleopts "github.com/example/containerd-shim-example-v2/proto/options/v1"
)

// Type URLs of the runtime options the shim understands.
const (
	typeExampleOptions = "example.options.v1.Options"
	typeRuncOptions    = "containerd.runc.v1.Options"
	typeLegacyCreate   = "containerd.linux.runc.CreateOptions"
	typeCRIOptions     = "runtimeoptions.v1.Options"
	// The 1.6 and 1.7 Go clients' checkpoint options for a runtime they do
	// not know as runc (see decodeLegacyCheckpoint).
	typeLegacyCheckpoint = "containerd.linux.runc.CheckpointOptions"
)

// RuntimeOptions is what the shim takes from any of the accepted option types.
type RuntimeOptions struct {
	BinaryName    string
	Root          string
	SystemdCgroup bool
	NoPivotRoot   bool
	NoNewKeyring  bool
	IoUID, IoGID  uint32
	CriuImagePath string
	CriuWorkPath  string
	// CriuPath is the CRIU binary checkpoints and restores run ("": the
	// one in PATH): the runc options' criu_path.
	CriuPath string
	// ShimCgroup is the cgroup `start` moves a new daemon into (not for tasks).
	ShimCgroup string
	// StallTimeout is the output stall policy's timeout, as shimio.Env
	// takes it: 0 the default, negative never (the option's "0").
	StallTimeout time.Duration
}

// DecodeOptions reads the runtime options Any. Unknown types are accepted and
// ignored (containerd passes whatever the user configured, and the 1.6 stock
// shim's refusal of CRI's type is a known wart); a known type that does not
// decode is the caller's error.
func DecodeOptions(a *anypb.Any) (RuntimeOptions, error) {
	var o RuntimeOptions
	if a == nil || len(a.GetValue()) == 0 && a.GetTypeUrl() == "" {
		return o, nil
	}
	var err error
	switch typeName(a.GetTypeUrl()) {
	case typeExampleOptions:
		var m exampleopts.Options
		if o, err = decodeRuncLike(a, typeExampleOptions, &m); err == nil {
			o.StallTimeout, err = parseStallTimeout(m.StallTimeout)
		}
	case typeRuncOptions:
		if o, err = decodeRuncLike(a, typeRuncOptions, &runcopts.Options{}); err == nil {
			o.CriuPath, err = runcCriuPath(a.GetValue())
		}
	case typeLegacyCreate:
		var m exampleopts.LegacyCreateOptions
		if err := codec.Unmarshal(a.GetValue(), &m); err != nil {
			return o, invalidArgument("decode %s: %v", typeLegacyCreate, err)
		}
		o = RuntimeOptions{NoPivotRoot: m.NoPivotRoot, NoNewKeyring: m.NoNewKeyring, IoUID: m.IoUid, IoGID: m.IoGid,
			CriuImagePath: m.CriuImagePath, CriuWorkPath: m.CriuWorkPath, ShimCgroup: m.ShimCgroup}
	case typeCRIOptions:
		var m criopts.Options
		if err := codec.Unmarshal(a.GetValue(), &m); err != nil {
			return o, invalidArgument("decode %s: %v", typeCRIOptions, err)
		}
		body := m.ConfigBody
		if len(body) == 0 && m.ConfigPath != "" {
			if body, err = readOptionsFile(m.ConfigPath); err != nil {
				return o, err
			}
		}
		o, err = parseOptionsTOML(body)
	default:
		// Unknown types carry nothing for us; but a mistyped option
		// falls back to the defaults, so say so.
		slog.Warn("runtime options of a type this shim does not know ignored; the defaults apply", "type", a.GetTypeUrl())
	}
	if err != nil {
		return o, err
	}
	if o.Root != "" && !filepath.IsAbs(o.Root) {
		return o, invalidArgument("runtime root %q must be an absolute path", o.Root)
	}
	if o.ShimCgroup != "" && !filepath.IsAbs(o.ShimCgroup) {
		return o, invalidArgument("shim cgroup %q must be an absolute cgroup path", o.ShimCgroup)
	}
	// A ".." element would climb out of the cgroup tree; two dots inside a
	// name ("a..b") are a name like any other, which the stock shim joins.
	if slices.Contains(strings.Split(o.ShimCgroup, "/"), "..") {
		return o, invalidArgument("shim cgroup %q must not name a parent with ..", o.ShimCgroup)
	}
	return o, nil
}

// parseStallTimeout reads the stall_timeout option: a positive Go duration,
// "0" (or any zero duration) for never, "" for the default.
func parseStallTimeout(v string) (time.Duration, error) {
	if v == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(v)
	switch {
	case err != nil:
		return 0, invalidArgument("stall timeout %q: want a duration such as \"30s\", or \"0\" for never", v)
	case d < 0:
		return 0, invalidArgument("stall timeout %q is negative", v)
	case d == 0:
		return -1, nil
	}
	return d, nil
}

// runcLike is what containerd's runc options and our own options message
// share (the same fields, so the same generated getters).
type runcLike interface {
	GetBinaryName() string
	GetRoot() string
	GetSystemdCgroup() bool
	GetNoPivotRoot() bool
	GetNoNewKeyring() bool
	GetIoUid() uint32
	GetIoGid() uint32
	GetCriuImagePath() string
	GetCriuWorkPath() string
	GetShimCgroup() string
}

// decodeRuncLike unmarshals a into m and copies the fields the shim uses.
func decodeRuncLike(a *anypb.Any, name string, m runcLike) (RuntimeOptions, error) {
	if err := codec.Unmarshal(a.GetValue(), m); err != nil {
		return RuntimeOptions{}, invalidArgument("decode %s: %v", name, err)
	}
	return RuntimeOptions{BinaryName: m.GetBinaryName(), Root: m.GetRoot(), SystemdCgroup: m.GetSystemdCgroup(),
		NoPivotRoot: m.GetNoPivotRoot(), NoNewKeyring: m.GetNoNewKeyring(), IoUID: m.GetIoUid(), IoGID: m.GetIoGid(),
		CriuImagePath: m.GetCriuImagePath(), CriuWorkPath: m.GetCriuWorkPath(), ShimCgroup: m.GetShimCgroup()}, nil
}

// runcCriuPathField is criu_path's number in containerd.runc.v1.Options.
// containerd 1.6 and 1.7 send it, as the stock shim of those releases
// reads it; 2.0 removed it from the API this shim's mirror is written from,
// whose decoder therefore skips it.
const runcCriuPathField = 8

// runcCriuPath reads criu_path from containerd.runc.v1.Options' wire form.
func runcCriuPath(b []byte) (string, error) {
	var path string
	err := codec.Fields(b, func(num protowire.Number, typ protowire.Type, v []byte, _ uint64) error {
		if num == runcCriuPathField && typ == protowire.BytesType {
			path = string(v) // the last one wins, as in protobuf
		}
		return nil
	})
	if err != nil {
		return "", invalidArgument("decode %s: criu_path: %v", typeRuncOptions, err)
	}
	return path, nil
}

// typeName strips a "type.googleapis.com/"-style prefix from a type URL.
func typeName(url string) string {
	return url[strings.LastIndexByte(url, '/')+1:]
}
