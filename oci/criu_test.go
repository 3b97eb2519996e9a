package oci

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/containerd/errdefs"
)

// The CRIU binary the runtime options name (criu_path) is the one a
// checkpoint and a restore run, whatever its name, and the runtime is not
// given runc 1.1's --criu, which runc 1.5 refuses: the runtime finds it as
// criu in its PATH.
func TestCheckpointAndRestoreRunTheNamedCRIU(t *testing.T) {
	ctx, r := startReaper(t)
	for _, name := range []string{"criu", "criu-3.19"} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			fake := filepath.Join(dir, "runc")
			// A runc 1.5: no --criu; runs "criu" from its PATH, then, for
			// a restore, writes the pid file (the argument after --pid-file);
			// state prints the criu its PATH finds.
			script := `#!/bin/sh
case " $* " in *" state "*) command -v criu; exit 0;; esac
pidfile=
for a in "$@"; do
	case "$a" in --criu) echo "flag provided but not defined: -criu" >&2; exit 1;; esac
	[ "$prev" = --pid-file ] && pidfile=$a
	prev=$a
done
criu swrk 3 || exit 1
[ -z "$pidfile" ] || echo 4242 >"$pidfile"
`
			if err := os.WriteFile(fake, []byte(script), 0o755); err != nil {
				t.Fatal(err)
			}
			bin := filepath.Join(t.TempDir(), "opt")
			if err := os.Mkdir(bin, 0o755); err != nil {
				t.Fatal(err)
			}
			used := filepath.Join(dir, "used")
			criu := filepath.Join(bin, name)
			if err := os.WriteFile(criu, []byte("#!/bin/sh\necho \"$*\" >>"+used+"\n"), 0o755); err != nil {
				t.Fatal(err)
			}
			bundle := filepath.Join(dir, "bundle")
			if err := os.Mkdir(bundle, 0o755); err != nil {
				t.Fatal(err)
			}
			rt := &Runtime{Binary: fake, Dir: bundle, Criu: criu, LogPath: filepath.Join(dir, "log.json"), Reaper: r}
			if err := rt.Checkpoint(ctx, "c1", CheckpointOpts{ImagePath: filepath.Join(dir, "img")}); err != nil {
				t.Fatalf("checkpoint: %v", err)
			}
			restore := RestoreOpts{CheckpointOpts: CheckpointOpts{ImagePath: filepath.Join(dir, "img")}, PidFile: filepath.Join(dir, "init.pid")}
			if err := rt.Restore(ctx, "c1", bundle, restore); err != nil {
				t.Fatalf("restore: %v", err)
			}
			if got, _ := os.ReadFile(used); string(got) != "swrk 3\nswrk 3\n" {
				t.Errorf("the named CRIU ran with %q, want it run once by the checkpoint and once by the restore", got)
			}
			// The runtime's other commands keep the shim's PATH.
			if out, err := rt.State(ctx, "c1"); err != nil {
				t.Fatal(err)
			} else if found := string(out); filepath.Dir(found) == bin || filepath.Dir(found) == filepath.Join(bundle, criuLinkDir) {
				t.Errorf("state's PATH finds the named CRIU (%s): only checkpoints and restores are given it", found)
			}
		})
	}
}

// A criu_path that names no executable fails the checkpoint as
// InvalidArgument, before the runtime runs.
func TestMissingCRIUIsInvalidArgument(t *testing.T) {
	ctx, r := startReaper(t)
	dir := t.TempDir()
	rt := &Runtime{Binary: "/bin/false", Dir: dir, Criu: filepath.Join(dir, "no-criu"), Reaper: r}
	err := rt.Checkpoint(ctx, "c1", CheckpointOpts{ImagePath: filepath.Join(dir, "img")})
	if !errdefs.IsInvalidArgument(err) {
		t.Fatalf("checkpoint with a criu_path that does not exist: %v, want InvalidArgument", err)
	}
}
