package launch

import (
	"os"
	"path/filepath"
	"testing"

	runcopts "github.com/containerd/containerd/api/types/runc/options"
	"google.golang.org/protobuf/types/known/anypb"
)

// A daemon warms the cgroup lock with a thread of its own only when `start`
// will not move it into a ShimCgroup (a thread moved meanwhile could be left
// behind in the old cgroup).
func TestShimCgroup(t *testing.T) {
	if got := shimCgroup(StartInput{}); got != "" {
		t.Errorf("no options: ShimCgroup %q", got)
	}
	for _, cg := range []string{"", "/shims/pod1"} {
		a, err := anypb.New(&runcopts.Options{ShimCgroup: cg})
		if err != nil {
			t.Fatal(err)
		}
		if got := shimCgroup(StartInput{Options: a}); got != cg {
			t.Errorf("ShimCgroup %q: shimCgroup = %q", cg, got)
		}
	}
}

// A task's bundle (config.json) gets a warming daemon; a pod's bundle under
// the Sandbox API (no config.json) does not.
func TestReadBundleHasSpec(t *testing.T) {
	dir := t.TempDir()
	if b, _ := readBundle(dir, "c1"); b.hasSpec {
		t.Error("a bundle without config.json: a container is to be created")
	}
	if err := os.WriteFile(filepath.Join(dir, "config.json"), []byte("{}"), 0o600); err != nil {
		t.Fatal(err)
	}
	if b, _ := readBundle(dir, "c1"); !b.hasSpec {
		t.Error("a bundle with config.json: no container to be created")
	}
}
