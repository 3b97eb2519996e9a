package upgrade

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/errdefs"

	"github.com/example/containerd-shim-example-v2/handover"
	upgradeapi "github.com/example/containerd-shim-example-v2/proto/upgrade/v1"
	"github.com/example/containerd-shim-example-v2/reaper"
)

// While a process is being launched (a reaper launch window is open: its PID
// and early exit are not anybody's yet, and they cannot be handed over), an
// upgrade to a binary that would otherwise be accepted is refused with
// FailedPrecondition, and the refusal leaves the daemon free for a later try.
func TestUpgradeRefusedWhileLaunching(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r := reaper.New()
	go r.Run(ctx)

	next := filepath.Join(t.TempDir(), "next")
	hello := fmt.Sprintf(`{"version":"next","revision":"r","minStateVersion":%d,"stateVersion":%d}`,
		handover.StateVersion, handover.StateVersion)
	if err := os.WriteFile(next, []byte("#!/bin/sh\necho '"+hello+"'\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	d := New(Parts{Reaper: r}, handover.Build{Version: "this"}, next, []string{next})

	w := r.Open() // a launch in progress
	_, err := d.Upgrade(ctx, &upgradeapi.UpgradeRequest{Binary: next})
	w.Close()
	if !errdefs.IsFailedPrecondition(err) || !strings.Contains(err.Error(), "being launched") {
		t.Fatalf("upgrade during a launch: %v, want FailedPrecondition (a process is being launched)", err)
	}
	d.mu.Lock()
	busy := d.busy
	d.mu.Unlock()
	if busy {
		t.Fatal("the refused upgrade left the daemon busy: every later upgrade would be refused")
	}
}

// The hello runs the new binary by its path, and the switch executes that
// path again later: a binary replaced in between (a second install) is
// refused, not executed unchecked.
func TestUpgradeRefusesABinaryReplacedAfterItsHello(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r := reaper.New()
	go r.Run(ctx)

	dir := t.TempDir()
	next := filepath.Join(dir, "next")
	hello := fmt.Sprintf(`{"version":"next","revision":"r","minStateVersion":%d,"stateVersion":%d}`,
		handover.StateVersion, handover.StateVersion)
	// It answers, then another file takes its path (as an install renames a new build into place).
	script := "#!/bin/sh\necho '" + hello + "'\ncp \"$0\" \"$0.new\" && mv \"$0.new\" \"$0\"\n"
	if err := os.WriteFile(next, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	d := New(Parts{Reaper: r}, handover.Build{Version: "this"}, next, []string{next})
	_, err := d.Upgrade(ctx, &upgradeapi.UpgradeRequest{Binary: next})
	if !errdefs.IsFailedPrecondition(err) || !strings.Contains(err.Error(), "replaced") {
		t.Fatalf("upgrade to a binary replaced after its hello: %v, want FailedPrecondition", err)
	}

	id, err := identify(next)
	if err != nil {
		t.Fatal(err)
	}
	if err := id.stillAt(next); err != nil {
		t.Fatalf("an unchanged binary: %v", err)
	}
	if err := os.WriteFile(next, []byte(script+"# changed in place\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := id.stillAt(next); !errdefs.IsFailedPrecondition(err) {
		t.Fatalf("a binary changed in place: %v, want FailedPrecondition", err)
	}
}

// The switch executes an ELF binary through the file it checked (so no
// replacement of the path can come in between), a script by its path, and
// a file that is not the one checked not at all.
func TestOpenCheckedBinary(t *testing.T) {
	dir := t.TempDir()
	elf := filepath.Join(dir, "elf")
	b, err := os.ReadFile("/bin/true")
	if err != nil {
		t.Skip(err)
	}
	script := filepath.Join(dir, "script")
	for path, content := range map[string][]byte{elf: b, script: []byte("#!/bin/sh\n")} {
		if err := os.WriteFile(path, content, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	id, err := identify(elf)
	if err != nil {
		t.Fatal(err)
	}
	exe, err := openChecked(elf, id)
	if err != nil || !strings.HasPrefix(exe.path, "/proc/self/fd/") {
		t.Fatalf("an ELF binary: %+v, %v; want its open file", exe, err)
	}
	if target, _ := os.Readlink(exe.path); target != elf {
		t.Errorf("%s names %q, want %q", exe.path, target, elf)
	}
	exe.close()

	sid, _ := identify(script)
	if exe, err := openChecked(script, sid); err != nil || exe.path != script {
		t.Fatalf("a script: %+v, %v; want its path", exe, err)
	}

	if err := os.Rename(script, elf); err != nil { // another file takes the path
		t.Fatal(err)
	}
	if _, err := openChecked(elf, id); !errdefs.IsFailedPrecondition(err) {
		t.Fatalf("a replaced binary: %v, want FailedPrecondition", err)
	}
}
