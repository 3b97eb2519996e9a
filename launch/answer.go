package launch

import (
	"encoding/json"
	"fmt"

	bootstrap "github.com/example/containerd-shim-example-v2/proto/api/runtime/bootstrap/v1"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/example/containerd-shim-example-v2/proto/codec"
)

// TaskAPIEnv lets an operator of containerd 2.x opt in to announcing task API
// version 3 (set it through [plugins."io.containerd.shim.v1.manager"] env).
// containerd 1.7 rejects version 3 and 1.7 and 2.x both say
// MAX_SHIM_VERSION=2, so the shim cannot tell them apart on its own.
const TaskAPIEnv = "EXAMPLE_SHIM_TASK_API"

// StartInput is what `start` reads from its stdin: either a containerd 2.3+
// BootstrapParams, or the bare runtime options Any of older releases.
type StartInput struct {
	Bootstrap *bootstrap.BootstrapParams // non-nil for the 2.3+ protocol
	Options   *anypb.Any                 // the runtime options, either way (may be nil)
}

// DecodeStartInput tells the two stdin formats apart. The bytes of one can
// decode as the other, so a BootstrapParams counts only when it names this
// very task and namespace.
func DecodeStartInput(data []byte, id, namespace string) StartInput {
	var in StartInput
	if len(data) == 0 {
		return in
	}
	var p bootstrap.BootstrapParams
	if err := codec.Unmarshal(data, &p); err == nil && p.InstanceID == id && p.InstanceID != "" &&
		(p.Namespace == "" || p.Namespace == namespace) {
		in.Bootstrap = &p
		for _, ext := range p.Extensions {
			if ext.GetValue() != nil {
				in.Options = ext.GetValue()
				break
			}
		}
		return in
	}
	var a anypb.Any
	if err := codec.Unmarshal(data, &a); err == nil && a.TypeUrl != "" {
		in.Options = &a
	}
	return in
}

// Answer is what `start` prints for containerd.
type Answer struct {
	Version int // 0: plain address; 2 or 3: that task API version
	Proto   bool
	Address string
}

// ChooseAnswer applies the launch contract: a 2.3+ bootstrap gets a protobuf
// BootstrapResult (version 3); containerd 1.6 (no MAX_SHIM_VERSION) gets the
// plain address, since it dials whatever it reads; 1.7-2.2 get JSON version 2,
// or 3 where the operator opted in and containerd allows it.
func ChooseAnswer(in StartInput, maxShimVersion, optIn, address string) Answer {
	switch {
	case in.Bootstrap != nil:
		return Answer{Version: 3, Proto: true, Address: address}
	case maxShimVersion == "":
		return Answer{Address: address}
	case optIn == "3":
		// 2.x still advertises 2 but accepts 3; the operator vouches for it.
		return Answer{Version: 3, Address: address}
	default:
		return Answer{Version: 2, Address: address}
	}
}

// Encode renders the answer as containerd expects it on stdout.
func (a Answer) Encode() ([]byte, error) {
	switch {
	case a.Proto:
		return codec.Marshal(&bootstrap.BootstrapResult{Version: int32(a.Version), Address: a.Address, Protocol: "ttrpc"})
	case a.Version == 0:
		return []byte(a.Address), nil
	default:
		b, err := json.Marshal(struct {
			Version  int    `json:"version"`
			Address  string `json:"address"`
			Protocol string `json:"protocol"`
		}{a.Version, a.Address, "ttrpc"})
		if err != nil {
			return nil, fmt.Errorf("encode start answer: %w", err)
		}
		return b, nil
	}
}
