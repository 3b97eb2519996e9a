package launch

import (
	"encoding/json"
	"reflect"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	introspect "github.com/example/containerd-shim-example-v2/proto/introspect/v1"
	introspectpb "github.com/example/containerd-shim-example-v2/proto/introspect/v1/pb"
	"github.com/example/containerd-shim-example-v2/proto/codec"
)

// The `introspect` action prints the shim's plain snapshot with
// encoding/json; operators' scripts read it as they read protojson's output
// before (EmitUnpopulated): the same names, 64-bit integers as strings,
// every field present. Empty lists may be null instead of [].
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
	emptyListsAsNull(w)
	if !reflect.DeepEqual(g, w) {
		t.Fatalf("encoding/json of the snapshot\n got %s\nwant %s", got, want)
	}
}

// emptyListsAsNull replaces every [] in a decoded JSON value by null.
func emptyListsAsNull(v any) {
	switch v := v.(type) {
	case map[string]any:
		for k, e := range v {
			if l, ok := e.([]any); ok && len(l) == 0 {
				v[k] = nil
				continue
			}
			emptyListsAsNull(e)
		}
	case []any:
		for _, e := range v {
			emptyListsAsNull(e)
		}
	}
}
