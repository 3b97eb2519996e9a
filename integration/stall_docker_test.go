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

	"github.com/example/containerd-shim-example-v2/integration/harness"
)

// Docker's namespace: a stalled reader holds the container back for as long as it stalls,
// and nothing is discarded. dockerd copies a container's FIFO into its log and into every
// attached client at the pace of the slowest, so a stall there is a client that stopped
// reading, not a dead reader, and discarding would cost `docker logs` the lines too (the
// stock shim blocks; the policy of other namespaces discards after stallPolicy). The
// reader pauses for longer than the policy, then reads on: every line arrives, in order.
// The flavors run in parallel (the test mostly waits out the policy, about 35 s), each in one of
// Docker's two namespaces: runc's state directory is per namespace, shared by the daemons.
func TestStallInDockerNamespaceLosesNothing(t *testing.T) {
	dockerNS := []string{"moby", "plugins.moby"}
	for i, flavor := range harness.AllFlavors {
		t.Run("containerd-"+flavor, func(t *testing.T) {
			t.Parallel()
			d := daemonFor(t, flavor)
			// Made before the namespace, so removed after its cleanup has removed the
			// writer, which writes into it to the end (cleanups run last made, first run).
			outDir := t.TempDir()
			ctx, ns := d.NamedNamespace(t, dockerNS[i%len(dockerNS)])
			ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
			defer cancel()

			counterFile := filepath.Join(outDir, "counter")
			writer := newContainer(t, ctx, d, "mb-writer", stallWriterArgs,
				oci.WithMounts([]specs.Mount{{Destination: "/out", Type: "bind", Source: outDir, Options: []string{"rbind", "rw"}}}))
			stdout, stderr := outputFIFOs(t, d, "stall-"+ns+"-"+flavor)
			readFIFO(t, ctx, stderr, io.Discard)
			reader := openSequenceReader(t, ctx, stdout)
			startTask(t, ctx, writer, fixedFIFOs(cio.Config{Stdout: stdout, Stderr: stderr}))
			counter := func() int { return readCounter(counterFile) }
			waitFor(t, 10*time.Second, "the reader receives 2000 lines", func() bool { return reader.last() >= 2000 })

			reader.pause()
			paused := time.Now()
			time.Sleep(3 * time.Second)
			held := counter()
			// As long as TestStdoutReaderStalled allows the policy to start discarding (the
			// clock also waits out a grace after containerd's start: see io/stall.go), and more.
			time.Sleep(time.Until(paused.Add(stallPolicy + stallSlack + 3*time.Second)))
			if c := counter(); c != held {
				t.Errorf("counter moved from %d to %d %v into the stall (policy elsewhere %v): output discarded in namespace %s",
					held, c, time.Since(paused).Round(time.Second), stallPolicy, ns)
			}
			t.Logf("container held back at line %d for %v", held, time.Since(paused).Round(time.Second))

			reader.resume()
			waitFor(t, 15*time.Second, "the reader catches up past the held lines", func() bool { return reader.last() > held+500 })
			if n, last := reader.gaps(); n > 0 {
				t.Errorf("%d gaps in the output after the stall (last: %s): lines were discarded", n, last)
			}
		})
	}
}
