package upgrade

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/containerd/ttrpc"

	introspect "github.com/example/containerd-shim-example-v2/proto/introspect/v1"
	upgradeapi "github.com/example/containerd-shim-example-v2/proto/upgrade/v1"
	"github.com/example/containerd-shim-example-v2/service"
	"github.com/example/containerd-shim-example-v2/ttrpcserver"
)

// --all finds the live daemons of the binary's name by their command lines;
// -containerd-address keeps those of one containerd (a node may run two,
// and a test run beside another must not upgrade the other's shims).
func TestLiveDaemonsOfOneContainerd(t *testing.T) {
	name := fmt.Sprintf("upgrade-test-daemon-%d", os.Getpid())
	for _, args := range [][]string{
		{"-socket", "/s1", "-address", "/c1"},
		{"-socket", "/s2", "-address", "unix:///c2"},
		{"-socket", "/s3", "-address", "/c2"},
	} {
		pretendDaemon(t, name, args...)
	}
	for _, c := range []struct {
		containerd string
		want       []string
	}{
		{"", []string{"/s1", "/s2", "/s3"}},
		{"/c2", []string{"/s2", "/s3"}},
		{"unix:///c1", []string{"/s1"}},
		{"/c3", nil},
	} {
		var got []string
		for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
			var err error
			if got, err = liveDaemons(name, c.containerd, daemonFlags); err != nil {
				t.Fatal(err)
			}
			slices.Sort(got)
			if slices.Equal(got, c.want) || time.Now().After(deadline) {
				break
			}
		}
		if !slices.Equal(got, c.want) {
			t.Errorf("daemons of containerd %q: %q, want %q", c.containerd, got, c.want)
		}
	}
}

// pretendDaemon runs a process that --all takes for a daemon: sh under
// the name, with the flags as its positional parameters. It waits in its
// builtin read on a pipe the test holds, so it never forks: a child between
// its fork and its exec would carry the same command line, and --all would
// count that daemon twice. It is stopped when the test ends.
func pretendDaemon(t *testing.T, name string, args ...string) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd := &exec.Cmd{Path: "/bin/sh", Args: append([]string{name, "-c", "read -r _", "sh"}, args...), Stdin: r}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	r.Close()
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait(); w.Close() })
}

// daemonFlags reads a pretend daemon's flags as the shim's own parser would.
func daemonFlags(args []string) (socket, containerd string) {
	for i := 0; i+1 < len(args); i++ {
		switch args[i] {
		case "-socket":
			socket = args[i+1]
		case "-address":
			containerd = args[i+1]
		}
	}
	return socket, containerd
}

// `upgrade --all` reports each daemon on a line of its own and fails when any
// was not upgraded: one that upgrades (its introspection then counts one
// upgrade more), one that refuses (the reason is printed), one that accepts
// and then keeps its binary (the error it recorded), one whose socket nobody
// serves. The others are upgraded all the same.
func TestAllReportsEveryDaemonAndFailsIfOneWasNotUpgraded(t *testing.T) {
	dir := t.TempDir()
	containerd := filepath.Join(dir, "containerd.sock") // only these daemons serve it
	name := filepath.Base(os.Args[0])                   // Command looks for daemons of its own name
	type fake struct{ upgradeErr, lastErr string }
	fakes := map[string]fake{
		"upgrades": {},
		"refuses":  {upgradeErr: "a task is being created"},
		"reverts":  {lastErr: "execve: permission denied"},
	}
	for id, f := range fakes {
		sock := filepath.Join(dir, id)
		l, err := net.Listen("unix", sock)
		if err != nil {
			t.Fatal(err)
		}
		srv := ttrpcserver.New(ttrpcserver.Options{})
		upgraded := make(chan struct{})
		srv.RegisterService(ServiceName, &ttrpc.ServiceDesc{Methods: map[string]ttrpc.Method{
			"Upgrade": func(_ context.Context, unmarshal func(any) error) (any, error) {
				var req upgradeapi.UpgradeRequest
				if err := unmarshal(&req); err != nil {
					return nil, err
				}
				if f.upgradeErr != "" {
					return nil, errgrpc.ToGRPC(fmt.Errorf("%s: %w", f.upgradeErr, errdefs.ErrFailedPrecondition))
				}
				close(upgraded)
				return &upgradeapi.UpgradeResponse{Pid: 7, Binary: req.Binary, UpgradesBefore: 0}, nil
			},
		}})
		srv.RegisterService(service.IntrospectService, &ttrpc.ServiceDesc{Methods: map[string]ttrpc.Method{
			"Snapshot": func(context.Context, func(any) error) (any, error) {
				r := &introspect.SnapshotResponse{Pid: 7, Version: "old", Upgrade: &introspect.Upgrade{}}
				select {
				case <-upgraded:
					if f.lastErr != "" {
						r.Upgrade.LastError = f.lastErr
					} else {
						r.Version, r.Upgrade.Count, r.Upgrade.FromVersion = "new", 1, "old"
					}
				default:
				}
				return r, nil
			},
		}})
		go func() { _ = srv.Serve(context.Background(), l) }()
		t.Cleanup(func() { _ = srv.Close(); l.Close() })
		pretendDaemon(t, name, "-socket", sock, "-address", containerd)
	}
	pretendDaemon(t, name, "-socket", filepath.Join(dir, "nobody"), "-address", containerd)
	// The pretend daemons are seen once their shells have started.
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		found, err := liveDaemons(name, containerd, daemonFlags)
		if err != nil {
			t.Fatal(err)
		}
		if len(found) == 4 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("--all would find %q, want the 4 pretend daemons", found)
		}
	}
	var out bytes.Buffer
	err := Command([]string{"--all", "-containerd-address", "unix://" + containerd, "-binary", "/bin/true"}, &out, daemonFlags)
	t.Logf("output:\n%s", out.String())
	if err == nil || !strings.Contains(err.Error(), "3 of 4 shim daemons not upgraded") {
		t.Errorf("Command: %v, want 3 of 4 not upgraded", err)
	}
	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	if len(lines) != 4 {
		t.Fatalf("%d lines, want one per daemon", len(lines))
	}
	for _, want := range []string{
		"pid 7: old -> new, pause 0.0 ms (/bin/true)",
		filepath.Join(dir, "refuses") + ": not upgraded: a task is being created: failed precondition",
		filepath.Join(dir, "reverts") + ": not upgraded: the daemon kept its binary: execve: permission denied",
		filepath.Join(dir, "nobody") + ": not upgraded: connect:",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("no line says %q", want)
		}
	}
}
