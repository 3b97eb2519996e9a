package launch

import (
	"testing"

	runcopts "github.com/containerd/containerd/api/types/runc/options"
	"google.golang.org/protobuf/types/known/anypb"
)

// A daemon warms the cgroup lock with a thread of its own only when `start`
// will not move it into a ShimCgroup (a thread moved meanwhile could be left
// behind in the old cgroup).
func TestShimCgroupSet(t *testing.T) {
	if shimCgroupSet(StartInput{}) {
		t.Error("no options: a ShimCgroup is set")
	}
	for cg, want := range map[string]bool{"": false, "/shims/pod1": true} {
		a, err := anypb.New(&runcopts.Options{ShimCgroup: cg})
		if err != nil {
			t.Fatal(err)
		}
		if got := shimCgroupSet(StartInput{Options: a}); got != want {
			t.Errorf("ShimCgroup %q: shimCgroupSet = %v, want %v", cg, got, want)
		}
	}
}
