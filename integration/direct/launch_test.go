package direct

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	taskv3 "github.com/containerd/containerd/api/runtime/task/v3"
	runcopts "github.com/containerd/containerd/api/types/runc/options"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// defaultSocketDir is where shim sockets go unless a 2.3 bootstrap names
// another directory (PROTOCOL.md §2.2).
const defaultSocketDir = "/run/containerd/s"

// Each manager's `start` gets the answer it understands (protobuf
// BootstrapResult v3, JSON v2, JSON v3 on opt-in, the bare address), naming
// a socket where and as containerd's own shims do (so `ctr shim` finds it),
// mode 0600 in a 0700 directory, recorded in the bundle's `address`. The
// daemon serves task v2 and v3 on it, and a task runs to its exit code
// through the announced version. Runtime options on stdin, bare or in the
// bootstrap, are honoured (their runc root is used), and so is the
// bootstrap's socket_dir.
func TestLaunch(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name      string
		mode      Mode
		options   bool
		socketDir bool
	}{
		{"bootstrap-2.3", Bootstrap, false, false},
		{"bootstrap-2.3-options-socket-dir", Bootstrap, true, true},
		{"json-v2", JSON2, false, false},
		{"json-v2-options", JSON2, true, false},
		{"json-v3-opt-in", OptIn3, false, false},
		{"plain-1.6", Plain, false, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			env := NewEnv(t)
			cfg := Config{Mode: tc.mode, Name: "launch", Args: []string{"sh", "-c", "exit 3"}, NullIO: true}
			if tc.options {
				cfg.RuncRoot = t.TempDir()
				cfg.Options = runcOptions(t, &runcopts.Options{Root: cfg.RuncRoot})
			}
			cfg.PrivateSocketDir = tc.socketDir
			c := env.Launch(t, cfg)
			socketDir := defaultSocketDir
			if tc.socketDir {
				socketDir = c.SocketDir
			}
			a := c.Shim.Answer
			t.Logf("%s answered %q", tc.mode, a.Raw)

			sum := sha256.Sum256([]byte(filepath.Join(c.Containerd.GRPCAddress, c.Namespace, c.ID)))
			if want := filepath.Join(socketDir, hex.EncodeToString(sum[:])); a.Socket() != want {
				t.Errorf("socket %s, want %s (sha256 of <address>/<namespace>/<id> in %s)", a.Socket(), want, socketDir)
			}
			if st, err := os.Lstat(a.Socket()); err != nil || st.Mode().Type() != os.ModeSocket || st.Mode().Perm() != 0o600 {
				t.Errorf("socket file %s: %v %v, want a socket with mode 0600", a.Socket(), st.Mode(), err)
			}
			// The shim makes the directory 0700. One made before by another
			// shim may differ (containerd 1.6's own shims make it 0600), and
			// the shim leaves it as it is: what matters is that nobody but
			// its owner can reach the sockets.
			if st, err := os.Stat(filepath.Dir(a.Socket())); err != nil || st.Mode().Perm()&0o077 != 0 {
				t.Errorf("socket directory: %v %v, want no access for group and others", st.Mode(), err)
			}
			if b, err := os.ReadFile(filepath.Join(c.Bundle.Dir, AddressFile)); err != nil || string(b) != a.Address {
				t.Errorf("bundle address file %q (%v), want %q", b, err, a.Address)
			}

			ctx := TestContext(t, time.Minute)
			for _, v := range []int{2, 3} {
				r, err := c.Shim.TaskAPI(t, v).Connect(ctx, &taskv3.ConnectRequest{ID: c.ID})
				if err != nil {
					t.Errorf("Connect over task v%d: %v (the daemon must serve both versions)", v, err)
				} else if r.GetShimPid() != uint32(c.Shim.Pid) || r.GetTaskPid() != 0 {
					t.Errorf("Connect over task v%d: shim pid %d task pid %d, want %d 0", v, r.GetShimPid(), r.GetTaskPid(), c.Shim.Pid)
				}
			}

			if err := c.Create(ctx); err != nil {
				t.Fatalf("Create: %v", err)
			}
			if b, err := os.ReadFile(filepath.Join(c.Bundle.Dir, ShimPidFile)); err != nil || strings.TrimSpace(string(b)) != strconv.Itoa(c.Shim.Pid) {
				t.Errorf("bundle shim.pid %q (%v), want %d", b, err, c.Shim.Pid)
			}
			// What the daemon holds stays out of the runtime's and its hooks'
			// processes: every descriptor past stdio is close-on-exec.
			if leaks, err := InheritableFDs(c.Shim.Pid); err != nil || len(leaks) > 0 {
				t.Errorf("the daemon's descriptors without close-on-exec: %s (%v)", strings.Join(leaks, "; "), err)
			}
			// Nor its signal dispositions: an ignored SIGPIPE would be the
			// runtime's, its hooks', the loggers' and the containers' too.
			if ignored, err := SignalIgnored(c.Shim.Pid, syscall.SIGPIPE); err != nil || ignored {
				t.Errorf("the daemon ignores SIGPIPE (%v): every process it starts would", err)
			}
			if tc.options {
				if _, err := os.Stat(filepath.Join(cfg.RuncRoot, c.Namespace, c.ID, "state.json")); err != nil {
					t.Errorf("runc state under the options' root: %v", err)
				}
			}
			start(t, ctx, c, "")
			if got := wait(t, ctx, c, "").GetExitStatus(); got != 3 {
				t.Errorf("exit status %d, want 3", got)
			}
			if d := deleteTask(t, ctx, c, ""); d.GetExitStatus() != 3 {
				t.Errorf("Delete: exit status %d, want 3", d.GetExitStatus())
			}
			_, _ = c.Task().Shutdown(ctx, &taskv3.ShutdownRequest{ID: c.ID})
			if !c.Shim.Exited(WaitTimeout) {
				t.Errorf("shim still running after Shutdown")
			}
			if _, err := os.Lstat(a.Socket()); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("socket after Shutdown: %v, want it removed", err)
			}
		})
	}
}

// runcOptions wraps runtime options as containerd sends them: an Any with
// the bare type name.
func runcOptions(t *testing.T, o *runcopts.Options) *anypb.Any {
	t.Helper()
	v, err := proto.Marshal(o)
	if err != nil {
		t.Fatal(err)
	}
	return &anypb.Any{TypeUrl: "containerd.runc.v1.Options", Value: v}
}
