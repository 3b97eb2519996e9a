package oci

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/containerd/errdefs"
)

// A container whose runtime options set NoPivotRoot is restored by crun:
// crun's restore has no --no-pivot (its create has), and its argument parser
// refuses the whole command line for any option it does not know.
func TestCrunRestoreGetsNoNoPivot(t *testing.T) {
	ctx, r := startReaper(t)
	dir := t.TempDir()
	fake := filepath.Join(dir, "crun")
	// Skips the global options and "restore", then accepts only the
	// options of crun's restore (src/restore.c).
	script := `#!/bin/sh
while [ $# -gt 0 ]; do
	case "$1" in
	restore) shift; break;;
	--root|--log|--log-format) shift 2;;
	*) shift;;
	esac
done
while [ $# -gt 1 ]; do
	case "$1" in
	--bundle|--image-path|--work-path|--pid-file|--console-socket|--manage-cgroups-mode) shift 2;;
	--tcp-established|--ext-unix-sk|--shell-job|--detach|--file-locks) shift;;
	*) echo "restore: unrecognized option '$1'" >&2; exit 64;;
	esac
done
echo 4242 >"$OCI_TEST_PIDFILE"
`
	if err := os.WriteFile(fake, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	pidFile := filepath.Join(dir, "init.pid")
	t.Setenv("OCI_TEST_PIDFILE", pidFile)
	rt := &Runtime{Binary: fake, Dir: dir, LogPath: filepath.Join(dir, "log.json"), Reaper: r}
	opts := RestoreOpts{CheckpointOpts: CheckpointOpts{ImagePath: filepath.Join(dir, "img")}, PidFile: pidFile, NoPivot: true}
	if err := rt.Restore(ctx, "c1", dir, opts); err != nil {
		t.Fatalf("crun restore of a NoPivotRoot container: %v", err)
	}
}

// A runtime without restore (crun built without CRIU) says so on its stderr,
// which during a restore is the container's: Restore still fails as
// NotImplemented with the runtime's words, as Checkpoint does, not as an
// Unknown "exit status 1".
func TestRestoreWithoutTheCommandIsNotImplemented(t *testing.T) {
	ctx, r := startReaper(t)
	dir := t.TempDir()
	fake := filepath.Join(dir, "crun")
	if err := os.WriteFile(fake, []byte("#!/bin/sh\necho \"unknown command restore\" >&2; exit 1\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	stderr, err := os.Create(filepath.Join(dir, "container-stderr")) // the container's stderr
	if err != nil {
		t.Fatal(err)
	}
	defer stderr.Close()
	rt := &Runtime{Binary: fake, Dir: dir, LogPath: filepath.Join(dir, "log.json"), Reaper: r}
	err = rt.Restore(ctx, "c1", dir, RestoreOpts{
		CheckpointOpts: CheckpointOpts{ImagePath: filepath.Join(dir, "img")},
		PidFile:        filepath.Join(dir, "init.pid"),
		Stdio:          Stdio{Err: stderr},
	})
	var rerr *Error
	if !errors.As(err, &rerr) {
		t.Fatalf("restore: %v, want the runtime's error", err)
	}
	if !errdefs.IsNotImplemented(err) || rerr.Message == "" {
		t.Errorf("restore through a runtime without restore: %v (NotImplemented %v), want NotImplemented with the runtime's message",
			err, errdefs.IsNotImplemented(err))
	}
}
