package launch

import (
	"bytes"
	"encoding/json"
	"os/exec"
	"testing"

	"github.com/containerd/containerd/api/types"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

func TestInfoNamesShimAndRuntimeFeatures(t *testing.T) {
	if _, err := exec.LookPath("runc"); err != nil {
		t.Fatalf("runc is needed (make deps): %v", err)
	}
	// runtimeoptions.v1.Options with config_body (field 3) "x = 1".
	opts, _ := proto.Marshal(&anypb.Any{TypeUrl: "runtimeoptions.v1.Options", Value: []byte{0x1a, 0x05, 'x', ' ', '=', ' ', '1'}})
	var out bytes.Buffer
	if err := Info(bytes.NewReader(opts), &out); err != nil {
		t.Fatal(err)
	}
	var info types.RuntimeInfo
	if err := proto.Unmarshal(out.Bytes(), &info); err != nil {
		t.Fatal(err)
	}
	if info.Name != RuntimeName || info.Version.GetVersion() != Version {
		t.Fatalf("info %+v", &info)
	}
	if info.Options.GetTypeUrl() != "runtimeoptions.v1.Options" {
		t.Fatalf("options not echoed: %v", info.Options)
	}
	if info.Features.GetTypeUrl() != featuresTypeURL {
		t.Fatalf("features type %q", info.Features.GetTypeUrl())
	}
	var features struct {
		OCIVersionMax string `json:"ociVersionMax"`
	}
	if err := json.Unmarshal(info.Features.GetValue(), &features); err != nil || features.OCIVersionMax == "" {
		t.Fatalf("features JSON %s (%v)", info.Features.GetValue(), err)
	}
}
