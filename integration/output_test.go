package integration

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containerd/containerd/api/services/tasks/v1"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/errdefs/pkg/errgrpc"

	"github.com/example/containerd-shim-example-v2/integration/harness"
)

const bigOutputSize = 8 << 20

// The container writes 8 MiB of random data to stdout, prints its sha256 on stderr and
// exits at once.
var bigOutputArgs = []string{"sh", "-c", "head -c 8388608 /dev/urandom > /tmp/d; sha256sum /tmp/d >&2; cat /tmp/d"}

// Scenario 4: 8 MiB of stdout arrives complete even though the client deletes the task the
// moment Wait returns (the shim must finish copying before it tears IO down).
func TestLargeOutputThenImmediateDelete(t *testing.T) {
	forEachFlavor(t, func(t *testing.T, d *harness.Daemon) {
		ctx, ns := d.NewNamespace(t)
		ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
		defer cancel()
		const id = "big1"

		ctr := newContainer(t, ctx, d, id, bigOutputArgs)
		var stdout, stderr lockedBuffer
		task, statusC := startTask(t, ctx, ctr, cio.NewCreator(cio.WithStreams(nil, &stdout, &stderr), cio.WithFIFODir(d.FIFODir)))
		if code := exitCode(t, ctx, statusC); code != 0 {
			t.Errorf("exit status %d, want 0 (stderr %q)", code, stderr.String())
		}
		// Delete straight through the task API: the client's Task.Delete would first wait for
		// the IO to drain, which is exactly what must not be needed.
		dctx, dcancel := context.WithTimeout(ctx, 30*time.Second)
		_, err := d.Client().TaskService().Delete(dctx, &tasks.DeleteTaskRequest{ContainerID: id})
		dcancel()
		if err != nil {
			t.Fatalf("delete right after wait: %v", errgrpc.ToNative(err))
		}
		ioDone := make(chan struct{})
		go func() {
			task.IO().Wait()
			close(ioDone)
		}()
		select {
		case <-ioDone:
		case <-time.After(30 * time.Second):
			task.IO().Cancel()
			task.IO().Close()
			t.Fatalf("stdout/stderr FIFOs not closed within 30s of Delete (got %d bytes of stdout)", len(stdout.Bytes()))
		}
		task.IO().Close()
		checkBigOutput(t, stdout.Bytes(), stderr.String())
		expectNoLeftovers(t, d, ns, id)
	})
}

// Scenario 4 through ctr: `ctr run --rm` with stdout captured to a file.
func TestLargeOutputCtrRun(t *testing.T) {
	forEachFlavor(t, func(t *testing.T, d *harness.Daemon) {
		ctx, ns := d.NewNamespace(t)
		ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
		defer cancel()
		const id = "big2"

		outPath := filepath.Join(t.TempDir(), "stdout")
		f, err := os.Create(outPath)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		var stderr bytes.Buffer
		args := append(ctrRun(d, "--rm", harness.ImageName, id), bigOutputArgs...)
		cmd := d.CtrCmd(ctx, args...)
		cmd.Stdout = f
		cmd.Stderr = &stderr
		if err := cmd.Run(); err != nil {
			t.Fatalf("ctr run: %v (context: %v, stderr %q)", err, ctx.Err(), stderr.String())
		}
		data, err := os.ReadFile(outPath)
		if err != nil {
			t.Fatal(err)
		}
		checkBigOutput(t, data, stderr.String())
		expectNoLeftovers(t, d, ns, id)
	})
}

// checkBigOutput compares the captured stdout with the size and the checksum the container
// printed on stderr (a line "<hex>  /tmp/d").
func checkBigOutput(t *testing.T, data []byte, stderr string) {
	t.Helper()
	if len(data) != bigOutputSize {
		t.Errorf("stdout: %d bytes, want %d", len(data), bigOutputSize)
	}
	// stderr may hold other lines too (ctr 2.x warns about cgroup v1 there).
	var want string
	for _, line := range strings.Split(stderr, "\n") {
		if f := strings.Fields(line); len(f) == 2 && f[1] == "/tmp/d" && len(f[0]) == 64 {
			want = f[0]
		}
	}
	if want == "" {
		t.Fatalf("stderr %q does not hold the container's sha256sum line", stderr)
	}
	sum := sha256.Sum256(data)
	if got := hex.EncodeToString(sum[:]); got != want {
		t.Errorf("stdout sha256 %s, container computed %s", got, want)
	}
}
