package launch

import (
	"encoding/json"
	"testing"

	bootstrap "github.com/containerd/containerd/api/runtime/bootstrap/v1"
	shimbootstrap "github.com/example/containerd-shim-example-v2/proto/api/runtime/bootstrap/v1"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

const addr = "unix:///run/containerd/s/abc"

func TestDecodeStartInputLegacyOptions(t *testing.T) {
	opts := &anypb.Any{TypeUrl: "runtimeoptions.v1.Options", Value: []byte{0x12, 0x03, 'a', 'b', 'c'}}
	data, _ := proto.Marshal(opts)
	in := DecodeStartInput(data, "t1", "ns")
	if in.Bootstrap != nil {
		t.Fatal("legacy options taken for a bootstrap")
	}
	if in.Options.GetTypeUrl() != "runtimeoptions.v1.Options" {
		t.Fatalf("options = %v", in.Options)
	}
}

func TestDecodeStartInputBootstrap(t *testing.T) {
	opts := &anypb.Any{TypeUrl: "containerd.runc.v1.Options", Value: []byte{0x08, 0x01}}
	p := &bootstrap.BootstrapParams{InstanceID: "t1", Namespace: "ns", Extensions: []*bootstrap.Extension{{Value: opts}}}
	data, _ := proto.Marshal(p)
	in := DecodeStartInput(data, "t1", "ns")
	if in.Bootstrap == nil {
		t.Fatal("bootstrap not recognised")
	}
	if in.Options.GetTypeUrl() != "containerd.runc.v1.Options" {
		t.Fatalf("options from extension = %v", in.Options)
	}
	// The same bytes for another task are not a bootstrap for us.
	if other := DecodeStartInput(data, "t2", "ns"); other.Bootstrap != nil {
		t.Fatal("bootstrap for another instance accepted")
	}
	if other := DecodeStartInput(data, "t1", "other"); other.Bootstrap != nil {
		t.Fatal("bootstrap for another namespace accepted")
	}
}

func TestDecodeStartInputEmpty(t *testing.T) {
	in := DecodeStartInput(nil, "t1", "ns")
	if in.Bootstrap != nil || in.Options != nil {
		t.Fatalf("empty stdin decoded as %+v", in)
	}
}

func TestChooseAnswer(t *testing.T) {
	boot := StartInput{Bootstrap: &shimbootstrap.BootstrapParams{InstanceID: "t1"}}
	cases := []struct {
		name        string
		in          StartInput
		max, optIn  string
		wantVersion int
		wantProto   bool
	}{
		{"containerd 1.6: plain address", StartInput{}, "", "", 0, false},
		{"1.6 ignores the opt-in", StartInput{}, "", "3", 0, false},
		{"1.7/2.x: JSON v2", StartInput{}, "2", "", 2, false},
		{"2.x operator opted in: v3", StartInput{}, "2", "3", 3, false},
		{"2.3 bootstrap: protobuf v3", boot, "", "", 3, true},
		{"2.3 bootstrap with env", boot, "2", "", 3, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a := ChooseAnswer(tc.in, tc.max, tc.optIn, addr)
			if a.Version != tc.wantVersion || a.Proto != tc.wantProto || a.Address != addr {
				t.Fatalf("got %+v", a)
			}
		})
	}
}

func TestAnswerEncodings(t *testing.T) {
	plain, _ := Answer{Address: addr}.Encode()
	if string(plain) != addr {
		t.Fatalf("plain answer %q", plain)
	}
	js, _ := Answer{Version: 2, Address: addr}.Encode()
	var v struct {
		Version  int    `json:"version"`
		Address  string `json:"address"`
		Protocol string `json:"protocol"`
	}
	if err := json.Unmarshal(js, &v); err != nil || v.Version != 2 || v.Address != addr || v.Protocol != "ttrpc" {
		t.Fatalf("json answer %s (%v)", js, err)
	}
	pb, _ := Answer{Version: 3, Proto: true, Address: addr}.Encode()
	var r bootstrap.BootstrapResult
	if err := proto.Unmarshal(pb, &r); err != nil || r.Version != 3 || r.Address != addr || r.Protocol != "ttrpc" {
		t.Fatalf("proto answer %+v (%v)", &r, err)
	}
}
