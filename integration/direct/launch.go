package direct

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// startTimeout bounds the `start` invocation; containerd runs it under the
// create request's context, and a healthy shim answers in milliseconds.
const startTimeout = 10 * time.Second

// Mode is the manager a launch imitates (PROTOCOL.md §1.3-§1.7, §1.10).
type Mode int

const (
	// Bootstrap is containerd 2.3+: a protobuf BootstrapParams on stdin (and
	// MAX_SHIM_VERSION=2 in the environment all the same), a protobuf
	// BootstrapResult version 3 expected, then containerd.task.v3.Task.
	Bootstrap Mode = iota
	// JSON2 is containerd 1.7-2.2: MAX_SHIM_VERSION=2, the runtime options
	// Any (or nothing) on stdin, {"version":2,...} expected, task v2.
	JSON2
	// OptIn3 is containerd 2.x whose operator set EXAMPLE_SHIM_TASK_API=3:
	// JSON version 3 expected, task v3.
	OptIn3
	// Plain is containerd 1.6: no MAX_SHIM_VERSION, only TTRPC_ADDRESS; the
	// bare address expected, task v2.
	Plain
)

// Modes lists every launch style.
var Modes = []Mode{Bootstrap, JSON2, OptIn3, Plain}

func (m Mode) String() string {
	switch m {
	case Bootstrap:
		return "bootstrap-2.3"
	case JSON2:
		return "json-v2"
	case OptIn3:
		return "json-v3-opt-in"
	case Plain:
		return "plain-1.6"
	}
	return fmt.Sprintf("mode(%d)", int(m))
}

// TaskVersion is the task API version the answer must announce and the
// manager then speaks.
func (m Mode) TaskVersion() int {
	if m == Bootstrap || m == OptIn3 {
		return 3
	}
	return 2
}

// Launch is one `start` invocation.
type Launch struct {
	Mode       Mode
	Namespace  string
	ID         string
	Bundle     string // the start process's working directory
	Containerd *Containerd
	Options    *anypb.Any // runtime options: on stdin (wrapped in the bootstrap for Bootstrap)
	SocketDir  string     // Bootstrap only: BootstrapParams.socket_dir
	// HangupIgnored: `start` begins with SIGHUP ignored (through sh's
	// `trap "" HUP`, kept across its exec), as under nohup.
	HangupIgnored bool
}

// Answer is what `start` printed, parsed according to the launch mode.
type Answer struct {
	Raw      []byte // stdout and stderr together, as containerd reads them
	Version  int    // 0 for a plain address
	Address  string
	Protocol string
}

// Socket is the filesystem path of the answer's unix:// address.
func (a Answer) Socket() string { return strings.TrimPrefix(a.Address, "unix://") }

// managerEnv lists the variables a manager sets for `start`; the test's own
// values of these, and of the shim's own settings (EXAMPLE_SHIM_*), are
// dropped so that only the mode decides them.
var managerEnv = []string{"TTRPC_ADDRESS", "GRPC_ADDRESS", "NAMESPACE", "MAX_SHIM_VERSION", "GOMAXPROCS",
	"SCHED_CORE", "PATH"}

// env is the start process's environment: the test's own (containerd passes
// its own on) plus what the manager of the mode appends (PROTOCOL.md §1.5).
func (l Launch) env() []string {
	var env []string
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		keep := !strings.HasPrefix(name, "EXAMPLE_SHIM_")
		for _, m := range managerEnv {
			keep = keep && name != m
		}
		if keep {
			env = append(env, kv)
		}
	}
	env = append(env, "PATH="+SearchPath(), "TTRPC_ADDRESS="+l.Containerd.TTRPCAddress, "GOMAXPROCS=2")
	if l.Mode != Plain {
		env = append(env, "GRPC_ADDRESS="+l.Containerd.GRPCAddress, "NAMESPACE="+l.Namespace, "MAX_SHIM_VERSION=2")
	}
	if l.Mode == OptIn3 {
		env = append(env, "EXAMPLE_SHIM_TASK_API=3")
	}
	return env
}

// args are the flags of `start`. The plain (1.6) launch uses the order
// containerd uses (1.6 through 2.3), the others another one: the shim must
// not depend on positions (PROTOCOL.md §1.3).
func (l Launch) args() []string {
	c := l.Containerd
	if l.Mode == Plain {
		return []string{"-namespace", l.Namespace, "-address", c.GRPCAddress, "-publish-binary", c.Binary, "-id", l.ID, "-debug", "start"}
	}
	return []string{"-namespace", l.Namespace, "-id", l.ID, "-address", c.GRPCAddress, "-publish-binary", c.Binary, "-debug", "start"}
}

// stdin is what the manager writes on the start process's stdin.
func (l Launch) stdin() ([]byte, error) {
	if l.Mode == Bootstrap {
		p := BootstrapParams{
			InstanceID:        l.ID,
			Namespace:         l.Namespace,
			LogLevel:          LogLevelDebug,
			ContainerdVersion: "v2.3.0",
			TTRPCAddress:      l.Containerd.TTRPCAddress,
			GRPCAddress:       l.Containerd.GRPCAddress,
			ContainerdBinary:  l.Containerd.Binary,
			SocketDir:         l.SocketDir,
		}
		if l.Options != nil {
			p.Extensions = []*anypb.Any{l.Options}
		}
		return p.Marshal()
	}
	if l.Options == nil {
		return nil, nil
	}
	return proto.Marshal(l.Options)
}

// Run runs `start` as the manager of the mode does (working directory the
// bundle, its own process group, stdout and stderr read together) and
// parses the answer as that manager would. An answer in another format, or
// announcing another version, is an error.
func (l Launch) Run() (Answer, error) {
	in, err := l.stdin()
	if err != nil {
		return Answer{}, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, ShimPath(), l.args()...)
	if l.HangupIgnored {
		cmd = exec.CommandContext(ctx, "/bin/sh", append([]string{"-c", `trap "" HUP; exec "$0" "$@"`, ShimPath()}, l.args()...)...)
	}
	cmd.Dir = l.Bundle
	cmd.Env = l.env()
	cmd.Stdin = bytes.NewReader(in)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out, err := cmd.CombinedOutput()
	a := Answer{Raw: out}
	if err != nil {
		return a, fmt.Errorf("%s start: %w: %s", l.Mode, err, trimOutput(out))
	}
	if err := a.parse(l.Mode); err != nil {
		return a, fmt.Errorf("%s start answered %q: %w", l.Mode, out, err)
	}
	return a, nil
}

func (a *Answer) parse(m Mode) error {
	switch m {
	case Bootstrap:
		r, err := DecodeBootstrapResult(a.Raw)
		if err != nil {
			return fmt.Errorf("not a protobuf BootstrapResult: %w", err)
		}
		if len(r.UnknownField) > 0 {
			return fmt.Errorf("BootstrapResult has unknown fields %v", r.UnknownField)
		}
		a.Version, a.Address, a.Protocol = int(r.Version), r.Address, r.Protocol
	case JSON2, OptIn3:
		var j struct {
			Version  int    `json:"version"`
			Address  string `json:"address"`
			Protocol string `json:"protocol"`
		}
		dec := json.NewDecoder(bytes.NewReader(a.Raw))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&j); err != nil {
			return fmt.Errorf("not the JSON answer: %w", err)
		}
		if dec.More() {
			return fmt.Errorf("text after the JSON answer")
		}
		a.Version, a.Address, a.Protocol = j.Version, j.Address, j.Protocol
	case Plain:
		// containerd 1.6 dials whatever it reads, trimmed.
		a.Address, a.Protocol = strings.TrimSpace(string(a.Raw)), "ttrpc"
	}
	if want := m.TaskVersion(); m != Plain && a.Version != want {
		return fmt.Errorf("version %d, want %d", a.Version, want)
	}
	if a.Protocol != "ttrpc" {
		return fmt.Errorf("protocol %q, want ttrpc", a.Protocol)
	}
	if !strings.HasPrefix(a.Address, "unix:///") {
		return fmt.Errorf("address %q is not unix://<absolute path>", a.Address)
	}
	return nil
}
