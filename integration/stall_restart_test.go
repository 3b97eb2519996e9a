package integration

import (
	"context"
	"io"
	"path/filepath"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/oci"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/example/containerd-shim-example-v2/integration/harness"
)

// shortStall is the stall_timeout option TestStallHeldWhileContainerdIsDown sets;
// returnGrace is the shim's io.DefaultReturnGrace, how long after containerd is back a
// stalled reader is waited for.
const (
	shortStall  = 2 * time.Second
	returnGrace = 30 * time.Second
)

// Under CRI containerd itself reads a container's stdout FIFO, so while containerd
// restarts nobody does. The shim must not take that for a client gone for good: while
// containerd's socket refuses connections, and for 30 s after it is back, the stall clock
// is held (the container waits in write(2), as under the stock shim) and nothing is lost.
// The test plays CRI's part, reading the FIFO of a container that writes numbered lines
// and whose task has stall_timeout = 2 s:
//  1. once containerd has been up for longer than the grace, the reader stops: the shim
//     discards after the option's 2 s (the default would be 15 s), and the reader sees
//     the gap when it reads again;
//  2. the reader stops and containerd is stopped for five stall timeouts, then started;
//     the reader reads again: every line arrives, none twice or out of order;
//  3. the reader stops and containerd restarts quicker than the clock (a socket made
//     anew); the reader comes back after three timeouts: nothing lost either.
//
// The stock shim has neither the option nor a stall policy (it never discards): this
// shim's behaviour only.
func TestStallHeldWhileContainerdIsDown(t *testing.T) {
	if harness.Runtime() != harness.DefaultRuntime {
		t.Skipf("the stall_timeout option is %s's", harness.DefaultRuntime)
	}
	for _, flavor := range harness.AllFlavors {
		t.Run("containerd-"+flavor, func(t *testing.T) {
			t.Parallel()
			d := harness.StartDaemon(t, flavor)
			stallHeldWhileContainerdIsDown(t, d, time.Now())
		})
	}
}

// stallHeldWhileContainerdIsDown runs the test on d, started (its socket made) by up.
func stallHeldWhileContainerdIsDown(t *testing.T, d *harness.Daemon, up time.Time) {
	outDir := t.TempDir() // removed after the namespace's containers, which write into it
	ctx, ns := d.NewNamespace(t)
	restartForCleanup(t, d)
	ctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()

	counterFile := filepath.Join(outDir, "counter")
	img, err := d.Client().GetImage(ctx, harness.ImageName)
	if err != nil {
		t.Fatalf("get image: %v", err)
	}
	// The container's runtime options, not the task's: containerd 2.x refuses task
	// options of any type but runc's (containerd.runc.v1.Options).
	writer, err := newContainerWithOptions(ctx, d, img, "sd-writer", stallWriterArgs, stallTimeoutOption(shortStall.String()),
		oci.WithMounts([]specs.Mount{{Destination: "/out", Type: "bind", Source: outDir, Options: []string{"rbind", "rw"}}}))
	if err != nil {
		t.Fatal(err)
	}
	stdout, stderr := outputFIFOs(t, d, "stall-down-"+ns)
	readFIFO(t, ctx, stderr, io.Discard)
	r := openSequenceReader(t, ctx, stdout)
	startTask(t, ctx, writer, fixedFIFOs(cio.Config{Stdout: stdout, Stderr: stderr}))
	counter := func() int { return readCounter(counterFile) }
	waitFor(t, 10*time.Second, "the reader receives 2000 lines", func() bool { return r.last() >= 2000 })

	// 1. containerd up for longer than the grace: a reader that stops reading is a
	// stalled one. The FIFO and the pipe behind it take a quarter of a second's output
	// first; the clock starts when they are full.
	time.Sleep(time.Until(up.Add(returnGrace + time.Second)))
	r.pause()
	paused := time.Now()
	time.Sleep(shortStall / 2)
	held := counter()
	if !eventually(shortStall+10*time.Second, func() bool { return counter() > held+500 }) {
		t.Fatalf("container still held at line %d %v after its reader stopped with containerd up (stall_timeout %v)", counter(), time.Since(paused).Round(time.Second), shortStall)
	}
	took := time.Since(paused)
	if took < shortStall {
		t.Errorf("the container ran on %v after its reader stopped, before the stall_timeout of %v", took.Round(100*time.Millisecond), shortStall)
	}
	r.resume()
	if !eventually(10*time.Second, func() bool { gaps, _ := r.gaps(); return gaps > 0 }) {
		t.Fatalf("no gap in the lines after the shim discarded for a stalled reader (%v after the pause): the reader's check cannot see a loss", took.Round(100*time.Millisecond))
	}
	t.Logf("with containerd up, the container ran on %v after its reader stopped", took.Round(100*time.Millisecond))
	waitFor(t, 10*time.Second, "the reader reads on", func() bool { return r.last() > counter()-500 })
	gapsBefore, _ := r.gaps()

	// 2. containerd goes down, and with it (under CRI) the FIFO's reader.
	r.pause()
	if err := d.StopProcess(); err != nil {
		t.Fatalf("stop containerd: %v", err)
	}
	time.Sleep(4 * shortStall)
	down := counter()
	time.Sleep(shortStall)
	if c := counter(); c != down {
		t.Errorf("counter moved from %d to %d while containerd was down: the shim discarded output for a reader that was coming back", down, c)
	}
	if err := d.StartProcess(); err != nil {
		t.Fatalf("start containerd again: %v", err)
	}
	time.Sleep(shortStall / 2)
	r.resume()
	if !eventually(15*time.Second, func() bool { return r.last() > down+1000 }) {
		t.Fatalf("after containerd came back the reader got up to line %d, want past %d", r.last(), down+1000)
	}
	if gaps, first := r.gaps(); gaps > gapsBefore {
		t.Errorf("lines lost across containerd's restart: %d gaps, the last %s", gaps-gapsBefore, first)
	}
	t.Logf("while containerd was down the counter stood at line %d", down)
	gapsBefore, _ = r.gaps()

	// 3. A restart quicker than the clock: containerd is up again before the clock runs
	// out, but the reader (CRI's recovery) comes some seconds later.
	r.pause()
	paused = time.Now()
	if err := d.StopProcess(); err != nil {
		t.Fatalf("stop containerd: %v", err)
	}
	if err := d.StartProcess(); err != nil {
		t.Fatalf("start containerd again: %v", err)
	}
	t.Logf("containerd stopped and started again in %v", time.Since(paused).Round(10*time.Millisecond))
	time.Sleep(time.Until(paused.Add(3 * shortStall)))
	quick := counter()
	time.Sleep(shortStall / 2)
	if c := counter(); c != quick {
		t.Errorf("counter moved from %d to %d %v after a quick containerd restart: the shim discarded output before the reader's grace was over", quick, c, time.Since(paused).Round(100*time.Millisecond))
	}
	r.resume()
	if !eventually(15*time.Second, func() bool { return r.last() > quick+1000 }) {
		t.Fatalf("after a quick containerd restart the reader got up to line %d, want past %d", r.last(), quick+1000)
	}
	if gaps, first := r.gaps(); gaps > gapsBefore {
		t.Errorf("lines lost across a quick containerd restart: %d gaps, the last %s", gaps-gapsBefore, first)
	}
}

// stallTimeoutOption is the shim's runtime options (example.options.v1.Options, see
// proto/options/v1/options.proto) with stall_timeout (field 11) set. Encoded here by
// hand: this module does not import the shim's, and the field's number on the wire is
// what a client depends on.
func stallTimeoutOption(v string) *anypb.Any {
	b := protowire.AppendTag(nil, 11, protowire.BytesType)
	return &anypb.Any{TypeUrl: "example.options.v1.Options", Value: protowire.AppendString(b, v)}
}
