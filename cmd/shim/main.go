// Command containerd-shim-example-v2 is the shim containerd runs for the
// runtime io.example.v2. containerd invokes it as `start` (spawn or reuse a
// daemon), `delete` (clean up after a daemon) or `-info`; without an action
// it is the daemon itself. Operators may run `introspect` and `upgrade`
// (see README and docs/upgrade.md).
package main

import (
	"fmt"
	"log/slog"
	"os"
	"runtime"

	"github.com/example/containerd-shim-example-v2/handover"
	"github.com/example/containerd-shim-example-v2/launch"
	"github.com/example/containerd-shim-example-v2/upgrade"
)

// The memory profiler samples allocations into a table that no shim ever
// reads; turned off before the first allocation it would sample.
func init() { runtime.MemProfileRate = 0 }

func main() {
	if err := run(); err != nil {
		// One line on stderr: for `start`, containerd shows it in its error.
		fmt.Fprintf(os.Stderr, "containerd-shim-example-v2: %v\n", err)
		os.Exit(1)
	}
}

func run() error {
	// The operator's command has flags of its own, after the action.
	if len(os.Args) > 1 && os.Args[1] == upgrade.Action {
		return upgrade.Command(os.Args[2:], os.Stdout, launch.DaemonSocket)
	}
	f, err := launch.ParseFlags(os.Args[1:])
	if err != nil {
		return err
	}
	switch {
	case f.Version:
		fmt.Printf("containerd-shim-example-v2:\n  Runtime: %s\n  Version: %s\n  Revision: %s\n", launch.RuntimeName, launch.Version, launch.Revision)
		return nil
	case f.Info:
		return launch.Info(os.Stdin, os.Stdout)
	}
	switch f.Action {
	case "start":
		// containerd 1.6 reads stdout and stderr together as the answer:
		// a log line on success (a warning that a socket directory cannot
		// be locked) would spoil the address. Errors still reach stderr
		// through main.
		slog.SetDefault(slog.New(slog.DiscardHandler))
		return launch.Start(f, os.Stdin, os.Stdout)
	case "delete":
		return launch.Delete(f, os.Stdout)
	case "introspect":
		return launch.Introspect(f, os.Stdout)
	case launch.HolderAction:
		return launch.RunHolder()
	case handover.HelloAction:
		return launch.Hello(os.Stdout)
	case "":
		return launch.RunDaemon(f)
	default:
		return fmt.Errorf("unknown action %q (want start, delete, introspect, or none for the daemon)", f.Action)
	}
}
