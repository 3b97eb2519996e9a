package process

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/example/containerd-shim-example-v2/bundle"
)

// A bundle used for a second task may still hold the first init's exit
// record; Create removes it, so `delete` never reports that exit for the new
// task. (The fake runtime refuses the create; the record must be gone all
// the same.)
func TestCreateRemovesAPreviousExitRecord(t *testing.T) {
	dir := t.TempDir()
	spec := `{"ociVersion":"1.0.2","process":{"args":["true"],"cwd":"/"},"root":{"path":"rootfs"}}`
	if err := os.WriteFile(filepath.Join(dir, "config.json"), []byte(spec), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := bundle.WriteExit(dir, bundle.Exit{Pid: 4242, Status: 3, ExitedAt: time.Unix(1, 0)}); err != nil {
		t.Fatal(err)
	}
	rt, r := fakeRuntime(t, dir, "") // refuses every command
	ctx := context.Background()
	_, err := Create(ctx, r, CreateConfig{ID: "c", Namespace: "ns", Bundle: dir, Runtime: rt}, func(int) {})
	if err == nil {
		t.Fatal("the fake runtime's create succeeded")
	}
	if _, ok, rerr := bundle.ReadExit(dir); ok || rerr != nil {
		t.Errorf("the previous init's exit record is still there (read error %v)", rerr)
	}
	if _, serr := os.Stat(filepath.Join(dir, bundle.ExitFile)); !errors.Is(serr, os.ErrNotExist) {
		t.Errorf("exit record file: %v, want it removed", serr)
	}
}
