package launch

import (
	"log/slog"
	"os"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// A `log` that is a regular file (a tool that drives the shim itself may
// create one) is appended to: the daemon opens it again after an in-place
// upgrade, and opened at its start it overwrote what the daemon had logged
// before the switch.
func TestDaemonLogAppendsToARegularFile(t *testing.T) {
	dir := t.TempDir()
	const before = "logged before the switch\n"
	if err := os.WriteFile(dir+"/log", []byte(before), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Chdir(dir)
	// setupLog takes over the process's standard error and slog's default:
	// both are given back.
	saved, err := unix.Dup(2)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = unix.Dup3(saved, 2, 0)
		unix.Close(saved)
	}()
	defer slog.SetDefault(slog.Default())
	setupLog(false)
	slog.Info("after the switch")
	data, err := os.ReadFile(dir + "/log")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(data), before) || !strings.Contains(string(data), "after the switch") {
		t.Errorf("log holds %q, want %q and then the new record", data, before)
	}
}
