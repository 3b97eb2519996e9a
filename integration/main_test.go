// Package integration runs real containers through the shim under test ($TEST_RUNTIME,
// default io.example.v2) under private containerd 1.6 and 2.x daemons. See harness/doc.go.
package integration

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/oci"

	"github.com/example/containerd-shim-example-v2/integration/harness"
)

// One daemon per flavor is shared by all tests of the package (each test uses its own
// namespace); they are started on first use and stopped by TestMain.
var shared struct {
	mu      sync.Mutex
	daemons map[string]*harness.Daemon
	errs    map[string]error
}

func TestMain(m *testing.M) {
	fmt.Fprintf(os.Stderr, "integration: runtime under test %s, shim binary %q\n", harness.Runtime(), harness.ShimUnderTest())
	code := m.Run()
	shared.mu.Lock()
	for flavor, d := range shared.daemons {
		if err := d.Stop(); err != nil {
			fmt.Fprintf(os.Stderr, "integration: stopping containerd %s: %v\n", flavor, err)
			code = 1
		}
	}
	shared.mu.Unlock()
	removeSecondShimBuild()
	os.Exit(code)
}

// daemonFor returns the shared daemon of a flavor, starting it on first use. A daemon that
// failed to start, or died, fails every test that asks for it.
func daemonFor(t *testing.T, flavor string) *harness.Daemon {
	t.Helper()
	harness.SkipFlavorUnderCrun(t, flavor)
	shared.mu.Lock()
	defer shared.mu.Unlock()
	if shared.daemons == nil {
		shared.daemons = map[string]*harness.Daemon{}
		shared.errs = map[string]error{}
	}
	if err := shared.errs[flavor]; err != nil {
		t.Fatalf("containerd %s unavailable: %v", flavor, err)
	}
	d := shared.daemons[flavor]
	if d == nil {
		var err error
		d, err = harness.NewDaemon(flavor)
		if err != nil {
			shared.errs[flavor] = err
			t.Fatalf("start containerd %s: %v", flavor, err)
		}
		shared.daemons[flavor] = d
	}
	if d.Exited() {
		err := fmt.Errorf("containerd %s (pid %d) has exited; log tail:\n%s", flavor, d.Pid(), d.LogTail(60))
		shared.errs[flavor] = err
		t.Fatal(err)
	}
	return d
}

// forEachFlavor runs fn as one subtest per containerd flavor, each with the shared daemon.
func forEachFlavor(t *testing.T, fn func(t *testing.T, d *harness.Daemon)) {
	for _, flavor := range harness.AllFlavors {
		t.Run("containerd-"+flavor, func(t *testing.T) {
			fn(t, daemonFor(t, flavor))
		})
	}
}

// newContainer creates a container of the test image running args with the runtime under
// test; extra spec options are applied after the image config. The namespace's cleanup
// removes it.
func newContainer(t *testing.T, ctx context.Context, d *harness.Daemon, id string, args []string, extra ...oci.SpecOpts) containerd.Container {
	t.Helper()
	img, err := d.Client().GetImage(ctx, harness.ImageName)
	if err != nil {
		t.Fatalf("get image: %v", err)
	}
	ctr, err := newContainerErr(ctx, d, img, id, args, extra...)
	if err != nil {
		t.Fatal(err)
	}
	return ctr
}

// taskRow is one line of `ctr task ls`.
type taskRow struct {
	Pid    int
	Status string
}

// ctrTaskList runs `ctr task ls` and parses it into id -> row.
func ctrTaskList(t *testing.T, ctx context.Context, d *harness.Daemon) map[string]taskRow {
	t.Helper()
	out, stderr, code, err := d.Ctr(ctx, "task", "ls")
	if err != nil || code != 0 {
		t.Fatalf("ctr task ls: code %d err %v stderr %q", code, err, stderr)
	}
	rows := map[string]taskRow{}
	for i, line := range strings.Split(strings.TrimSpace(out), "\n") {
		f := strings.Fields(line)
		if i == 0 || len(f) < 3 {
			continue // header
		}
		pid, _ := strconv.Atoi(f[1])
		rows[f[0]] = taskRow{Pid: pid, Status: f[2]}
	}
	return rows
}

// waitTaskStatus polls `ctr task ls` until task id has the wanted status.
func waitTaskStatus(t *testing.T, ctx context.Context, d *harness.Daemon, id, want string, timeout time.Duration) taskRow {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		row, ok := ctrTaskList(t, ctx, d)[id]
		if ok && row.Status == want {
			return row
		}
		if time.Now().After(deadline) {
			t.Fatalf("task %s: status %q (listed: %v), want %s within %v", id, row.Status, ok, want, timeout)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// expectNoLeftovers fails the test if anything of task ns/id remains after timeout.
func expectNoLeftovers(t *testing.T, d *harness.Daemon, ns, id string) {
	t.Helper()
	if left := d.WaitNoLeftovers(ns, id, harness.LeakTimeout); len(left) > 0 {
		t.Errorf("task %s/%s left behind: %s", ns, id, strings.Join(left, "; "))
	}
}

// lockedBuffer is a bytes.Buffer safe for a writer goroutine and a reader.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) Bytes() []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]byte(nil), b.buf.Bytes()...)
}

func (b *lockedBuffer) String() string { return string(b.Bytes()) }

// ctrRun returns the arguments of `ctr run` with the runtime under test: its FIFOs go to the
// daemon's private dir, so detached runs leave nothing in /run/containerd/fifo.
func ctrRun(d *harness.Daemon, args ...string) []string {
	return append([]string{"run", "--fifo-dir", d.FIFODir, "--runtime", harness.Runtime()}, args...)
}

// stockRunc2x reports whether the runtime under test is the stock runc shim under
// containerd 2.x; used only to tolerate its known shortcomings, named where used.
func stockRunc2x(d *harness.Daemon) bool {
	return harness.Runtime() == "io.containerd.runc.v2" && d.Is2x()
}
