package upgrade

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/containerd/errdefs/pkg/errgrpc"

	"github.com/example/containerd-shim-example-v2/internal/ttrpcclient"

	upgradeapi "github.com/example/containerd-shim-example-v2/proto/upgrade/v1"
	"github.com/example/containerd-shim-example-v2/service"
)

// Action is the command-line word of the operator command.
const Action = "upgrade"

// switchTimeout bounds how long the command waits for a daemon to report
// the upgrade done (its introspection answering with a higher count).
const switchTimeout = 30 * time.Second

// Command runs `upgrade -address <socket> | --all [-containerd-address
// <path>] [-binary <path>]`: it asks each daemon to upgrade itself in place,
// waits until it serves again with the new binary, and prints, per daemon,
// its pid, old and new version and the pause. It fails if any daemon was not
// upgraded. daemonSocket reads a process's command line (without argv[0])
// the way the daemon's own flag parser does, and says which socket it serves
// ("" if it is not a daemon) and for which containerd: --all finds the
// daemons with it, those of one containerd with -containerd-address (a node
// may run two, each with its own shims).
func Command(args []string, out io.Writer, daemonSocket func(args []string) (socket, containerd string)) error {
	fs := flag.NewFlagSet(Action, flag.ContinueOnError)
	fs.SetOutput(out)
	address := fs.String("address", "", "the shim daemon's socket (unix:///path or /path)")
	all := fs.Bool("all", false, "every live daemon of this binary's name on this node")
	containerd := fs.String("containerd-address", "", "with --all: only the daemons serving this containerd (its socket, as given to the shims' -address)")
	binary := fs.String("binary", "", "the new binary (default: the path each daemon was started from)")
	hold := fs.Duration("test-hold", 0, "for tests: keep everything paused this long during the switch")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var sockets []string
	switch {
	case *address != "" && *all:
		return errors.New("upgrade: -address and --all exclude each other")
	case *containerd != "" && !*all:
		return errors.New("upgrade: -containerd-address goes with --all")
	case *address != "":
		sockets = []string{strings.TrimPrefix(*address, "unix://")}
	case *all:
		var err error
		if sockets, err = liveDaemons(filepath.Base(os.Args[0]), *containerd, daemonSocket); err != nil {
			return err
		}
		if len(sockets) == 0 {
			fmt.Fprintln(out, "no live shim daemon found")
			return nil
		}
	default:
		return errors.New("upgrade: need -address <socket> or --all")
	}
	if *binary != "" && !filepath.IsAbs(*binary) {
		abs, err := filepath.Abs(*binary)
		if err != nil {
			return err
		}
		*binary = abs
	}
	failed := 0
	for _, s := range sockets {
		line, err := upgradeOne(s, *binary, *hold)
		if err != nil {
			failed++
			fmt.Fprintf(out, "%s: not upgraded: %v\n", s, err)
			continue
		}
		fmt.Fprintln(out, line)
	}
	if failed > 0 {
		return fmt.Errorf("%d of %d shim daemons not upgraded", failed, len(sockets))
	}
	return nil
}

func dial(ctx context.Context, socket string) (*ttrpcclient.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	c, err := ttrpcclient.Dial(ctx, socket)
	if err != nil {
		return nil, fmt.Errorf("connect: %w", err)
	}
	return c, nil
}

// upgradeOne upgrades the daemon at socket and says what happened.
func upgradeOne(socket, binary string, hold time.Duration) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), switchTimeout)
	defer cancel()
	c, err := dial(ctx, socket)
	if err != nil {
		return "", err
	}
	var resp upgradeapi.UpgradeResponse
	err = c.Call(ctx, ServiceName, "Upgrade", &upgradeapi.UpgradeRequest{Binary: binary, HoldMs: uint32(hold.Milliseconds())}, &resp)
	c.Close()
	if err != nil {
		return "", errgrpc.ToNative(err)
	}
	// The daemon switches after answering; its introspection tells when it
	// serves again, and how it went.
	for {
		snap, err := service.Snapshot(ctx, socket)
		if err == nil && snap.Upgrade != nil {
			u := snap.Upgrade
			switch {
			case u.Count > resp.UpgradesBefore:
				return fmt.Sprintf("pid %d: %s -> %s, pause %.1f ms (%s)", snap.Pid, u.FromVersion, snap.Version,
					float64(u.PauseUs)/1000, resp.Binary), nil
			case u.LastError != "":
				return "", fmt.Errorf("the daemon kept its binary: %s", u.LastError)
			}
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("no upgrade reported within %v (last: %v)", switchTimeout, err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// liveDaemons finds the sockets of the running daemons of a binary name:
// processes started as `<name> ... -socket <path>` without an action; those
// started with `-address <containerd>` only, when containerd is not empty.
func liveDaemons(name, containerd string, daemonSocket func(args []string) (socket, containerd string)) ([]string, error) {
	containerd = strings.TrimPrefix(containerd, "unix://")
	dirs, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	var out []string
	for _, d := range dirs {
		if d.Name()[0] < '0' || d.Name()[0] > '9' {
			continue
		}
		raw, err := os.ReadFile(filepath.Join("/proc", d.Name(), "cmdline"))
		if err != nil || len(raw) == 0 {
			continue
		}
		argv := strings.Split(strings.TrimSuffix(string(raw), "\x00"), "\x00")
		if filepath.Base(argv[0]) != name {
			continue
		}
		s, serves := daemonSocket(argv[1:])
		if s != "" && (containerd == "" || strings.TrimPrefix(serves, "unix://") == containerd) {
			out = append(out, s)
		}
	}
	return out, nil
}
