package launch

import (
	"encoding/json"
	"reflect"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/example/containerd-shim-example-v2/proto/codec"
	introspect "github.com/example/containerd-shim-example-v2/proto/introspect/v1"
	introspectpb "github.com/example/containerd-shim-example-v2/proto/introspect/v1/pb"
)

// The `introspect` action prints the shim's plain snapshot with
// encoding/json; operators' scripts read it as they read protojson's output
// before (EmitUnpopulated): the same names, 64-bit integers as strings,
// every field present, empty lists as [].
func TestIntrospectJSONLikeProtojson(t *testing.T) {
	pb := &introspectpb.SnapshotResponse{
		Pid: 7, Version: "v1", UptimeMs: 1 << 40, Namespace: "ns",
		Events: &introspectpb.EventQueue{Pending: 2, OldestPendingMs: 99},
		Tasks: []*introspectpb.Task{{Id: "c1", OomKills: 3, Processes: []*introspectpb.Process{{ExecId: "e", Pid: 9, OutputBytes: 1 << 33}}},
			{Id: "c2"}},
		CgroupWarmingRunning: true,
	}
	want, err := protojson.MarshalOptions{EmitUnpopulated: true}.Marshal(pb)
	if err != nil {
		t.Fatal(err)
	}
	b, err := proto.Marshal(pb)
	if err != nil {
		t.Fatal(err)
	}
	var mirror introspect.SnapshotResponse
	if err := codec.Unmarshal(b, &mirror); err != nil {
		t.Fatal(err)
	}
	emptyLists(reflect.ValueOf(&mirror))
	got, err := json.Marshal(&mirror)
	if err != nil {
		t.Fatal(err)
	}
	var w, g any
	if err := json.Unmarshal(want, &w); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(got, &g); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(g, w) {
		t.Fatalf("encoding/json of the snapshot\n got %s\nwant %s", got, want)
	}
}
