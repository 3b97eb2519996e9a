package oci

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/errdefs"

	"github.com/example/containerd-shim-example-v2/internal/fdtest"
	"github.com/example/containerd-shim-example-v2/reaper"
)

func TestReadPidFile(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	if pid, err := ReadPidFile(write("ok", "4321\n")); err != nil || pid != 4321 {
		t.Fatalf("pid %d, %v; want 4321", pid, err)
	}
	if pid, err := ReadPidFile(write("bare", "17")); err != nil || pid != 17 {
		t.Fatalf("pid %d, %v; want 17 (no newline)", pid, err)
	}
	for name, content := range map[string]string{"junk": "not-a-pid", "zero": "0", "long": strings.Repeat("9", 200), "empty": ""} {
		if pid, err := ReadPidFile(write(name, content)); err == nil {
			t.Errorf("%s: pid %d, want an error", name, pid)
		}
	}
	if _, err := ReadPidFile(filepath.Join(dir, "missing")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v, want ErrNotExist", err)
	}
}

// A runtime call whose stdio entries are empty gets /dev/null for them, and
// leaves no descriptor open in the daemon once it has exited (os/exec's pidfd
// for the command is released, not left to a garbage collection).
func TestEmptyStdioIsDevNullAndCallsLeaveNoDescriptor(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "fds")
	fake := filepath.Join(dir, "fake-runtime")
	// The shell reports where its own stdin, stdout and stderr point.
	// (Read before any redirection: the shell may apply one to itself.)
	script := "#!/bin/sh\na=$(readlink /proc/$$/fd/0) b=$(readlink /proc/$$/fd/1) c=$(readlink /proc/$$/fd/2)\n" +
		"echo \"$a $b $c\" >>\"$OCI_TEST_OUT\"\n"
	if err := os.WriteFile(fake, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("OCI_TEST_OUT", out)
	ctx, r := startReaper(t)
	rt := &Runtime{Binary: fake, Dir: dir, Reaper: r}

	if _, err := rt.run(ctx, &Stdio{}, nil, "create"); err != nil {
		t.Fatal(err)
	}
	before := fdtest.Count(t)
	for range 5 {
		if _, err := rt.run(ctx, &Stdio{}, nil, "create"); err != nil {
			t.Fatal(err)
		}
	}
	if after := fdtest.Count(t); after != before {
		t.Errorf("open descriptors went from %d to %d over 5 calls", before, after)
	}
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Fields(string(data))
	if len(lines) != 18 {
		t.Fatalf("got %d stdio entries, want 18: %q", len(lines), lines)
	}
	for _, l := range lines {
		if l != os.DevNull {
			t.Fatalf("an empty stdio entry pointed to %q, want %s", l, os.DevNull)
		}
	}
}

func TestWriteProcessFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "p.json")
	if err := WriteProcessFile(path, []byte(`{"args":["a-much-longer-first-spec"]}`)); err != nil {
		t.Fatal(err)
	}
	// A second write replaces the first whole (an exec id reused after Delete).
	if err := WriteProcessFile(path, []byte(`{"args":["true"]}`)); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if string(data) != `{"args":["true"]}` {
		t.Fatalf("file holds %q", data)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v, want 0600 (the spec holds the process's environment)", st.Mode().Perm())
	}
	if err := WriteProcessFile(filepath.Join(t.TempDir(), "no", "dir"), nil); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("write into a missing directory: %v, want ErrNotExist", err)
	}
}

// Restore asks runc not to make itself a subreaper (the shim is one), as the
// stock shim does; crun's restore has no such flag and refuses unknown
// options, so it is not passed to crun (named by path or on PATH).
func TestRestoreFlagsPerRuntime(t *testing.T) {
	ctx, r := startReaper(t)
	for _, tc := range []struct {
		name          string
		wantSubreaper bool
	}{{"runc", true}, {"runc-1.5", true}, {"crun", false}, {"krun", false}} {
		dir := t.TempDir()
		out := filepath.Join(dir, "args")
		fake := filepath.Join(dir, tc.name)
		if err := os.WriteFile(fake, []byte("#!/bin/sh\necho \"$@\" >\"$OCI_TEST_OUT\"\n"), 0o755); err != nil {
			t.Fatal(err)
		}
		t.Setenv("OCI_TEST_OUT", out)
		rt := &Runtime{Binary: fake, Dir: dir, Reaper: r}
		opts := RestoreOpts{CheckpointOpts: CheckpointOpts{ImagePath: "/img"}, PidFile: filepath.Join(dir, "pid")}
		if err := rt.Restore(ctx, "c1", dir, opts); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		data, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		args := strings.Fields(string(data))
		if got := slices.Contains(args, "--no-subreaper"); got != tc.wantSubreaper {
			t.Errorf("%s restore %q: --no-subreaper passed %v, want %v", tc.name, args, got, tc.wantSubreaper)
		}
		if !slices.Contains(args, "--detach") || !slices.Contains(args, "/img") || args[len(args)-1] != "c1" {
			t.Errorf("%s restore %q: want --detach, the image path and the id last", tc.name, args)
		}
	}
}

// Update hands the resources over on the runtime's standard input under a
// path it opens as any file: crun reads "-" as "/dev/stdin", which a bare
// devtmpfs lacks (the cgroup v2 lane's guest: every update through crun
// failed there). The fake runtime reads what it is given as crun does, and
// fails as crun did where "-" is given and /dev/stdin is missing.
func TestUpdateResourcesNeedNoDevStdin(t *testing.T) {
	ctx, r := startReaper(t)
	dir := t.TempDir()
	got := filepath.Join(dir, "resources")
	fake := filepath.Join(dir, "crun")
	script := "#!/bin/sh\nfor a; do case \"$a\" in --resources=*) res=${a#--resources=};; esac; done\n" +
		"[ \"$res\" = - ] && res=$OCI_TEST_NO_DEV/stdin\n" +
		"cat \"$res\" >\"$OCI_TEST_OUT\" || { echo \"error opening file $res\" >&2; exit 1; }\n"
	if err := os.WriteFile(fake, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("OCI_TEST_OUT", got)
	t.Setenv("OCI_TEST_NO_DEV", filepath.Join(dir, "dev")) // a /dev without stdin
	rt := &Runtime{Binary: fake, Dir: dir, Reaper: r}
	want := `{"memory":{"limit":104857600}}`
	if err := rt.Update(ctx, "c1", []byte(want)); err != nil {
		t.Fatalf("update: %v", err)
	}
	if data, err := os.ReadFile(got); err != nil || string(data) != want {
		t.Errorf("the runtime read %q (%v), want %q", data, err, want)
	}
}

// A runtime without the command asked for fails as NotImplemented, in crun's
// words (stderr) and in runc's (its JSON log); any other failure, or another
// command's name in the message, keeps the runtime's error unclassified.
func TestMissingCommandIsNotImplemented(t *testing.T) {
	ctx, r := startReaper(t)
	for _, tc := range []struct {
		name, script string
		want         bool
	}{
		{"crun without CRIU", `echo "unknown command checkpoint" >&2; exit 1`, true},
		{"runc without the command", `printf '{"level":"error","msg":"No help topic for '"'"'checkpoint'"'"'\\n"}\n' >>"$2"; exit 3`, true},
		{"CRIU failed", `printf '{"level":"error","msg":"criu failed: type NOTIFY errno 0"}\n' >>"$2"; exit 1`, false},
		{"another command missing", `echo "unknown command restore" >&2; exit 1`, false},
	} {
		dir := t.TempDir()
		fake := filepath.Join(dir, "fake-runtime")
		if err := os.WriteFile(fake, []byte("#!/bin/sh\n"+tc.script+"\n"), 0o755); err != nil {
			t.Fatal(err)
		}
		rt := &Runtime{Binary: fake, Dir: dir, LogPath: filepath.Join(dir, "log.json"), Reaper: r}
		err := rt.Checkpoint(ctx, "c1", CheckpointOpts{ImagePath: filepath.Join(dir, "img")})
		var rerr *Error
		if !errors.As(err, &rerr) {
			t.Fatalf("%s: %v, want the runtime's error", tc.name, err)
		}
		if got := errdefs.IsNotImplemented(err); got != tc.want {
			t.Errorf("%s: %v: NotImplemented %v, want %v", tc.name, err, got, tc.want)
		}
	}
}

// startReaper runs a reaper for the runtime's commands until the test ends.
func startReaper(t *testing.T) (context.Context, *reaper.Reaper) {
	r := reaper.New()
	ctx := t.Context()
	go r.Run(ctx)
	return ctx, r
}

// A runtime command that does its work in a child (a wrapper script around
// runc) and leaves it: the call ends, and the child is killed, whether the
// command exited by itself while its child held the output pipes, or hung
// in its child until the call's deadline. The child, under a shim that is
// a subreaper, would otherwise run on, and the call would wait for it.
func TestRuntimeCommandsLeaveNoChild(t *testing.T) {
	ctx, r := startReaper(t)
	for _, tc := range []struct {
		name, script string
		deadline     time.Duration
	}{
		{"left running", `sleep 3608 & echo $! >"$OCI_TEST_OUT"; exit 0`, time.Minute},
		{"hung in its child", `sleep 3609 & echo $! >"$OCI_TEST_OUT"; wait; exit 1`, 300 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			out := filepath.Join(dir, "child")
			t.Setenv("OCI_TEST_OUT", out)
			fake := filepath.Join(dir, "fake-runtime")
			if err := os.WriteFile(fake, []byte("#!/bin/sh\n"+tc.script+"\n"), 0o755); err != nil {
				t.Fatal(err)
			}
			rt := &Runtime{Binary: fake, Dir: dir, Reaper: r}
			cctx, cancel := context.WithTimeout(ctx, tc.deadline)
			defer cancel()
			ended := make(chan error, 1)
			go func() { ended <- rt.Kill(cctx, "c1", 15, false) }()
			select {
			case err := <-ended:
				t.Logf("Kill: %v", err)
			case <-time.After(tc.deadline + 10*time.Second):
				t.Fatal("the call waits for the child its runtime left")
			}
			data, err := os.ReadFile(out)
			if err != nil {
				t.Fatal(err)
			}
			child, _ := strconv.Atoi(strings.TrimSpace(string(data)))
			gone := false
			for i := 0; i < 100 && !gone; i++ {
				stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", child))
				// Gone, or a zombie its new parent has not reaped yet.
				gone = err != nil || strings.Contains(string(stat), ") Z ")
				time.Sleep(20 * time.Millisecond)
			}
			if !gone {
				_ = syscall.Kill(child, syscall.SIGKILL)
				t.Errorf("the runtime's child %d still runs after the call", child)
			}
		})
	}
}
