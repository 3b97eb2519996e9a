package integration

import (
	"context"
	"io"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/cio"

	"github.com/example/containerd-shim-example-v2/integration/harness"
)

// A program that reads its terminal raw (`stty raw -echo; cat > file`, as a
// file is sent through `kubectl exec -it`) gets exactly the bytes its client
// sent: ending the input (CloseIO) adds none (it added the end-of-file
// character, twice after a partial line), and its terminal is then hung up.
func TestRawTerminalInputEndAddsNoBytes(t *testing.T) {
	forEachFlavor(t, func(t *testing.T, d *harness.Daemon) {
		ctx, _ := d.NewNamespace(t)
		ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
		defer cancel()
		ctr := newContainer(t, ctx, d, "ttyraw", loopArgs)
		task, statusC := startTask(t, ctx, ctr, cio.NullIO)

		inR, inW := io.Pipe()
		var out lockedBuffer
		spec := execSpec(t, ctx, task, "sh", "-c", "stty raw -echo; echo ready; cat > /tmp/f")
		spec.Terminal = true
		proc, err := task.Exec(ctx, "raw", spec, cio.NewCreator(cio.WithStreams(inR, &out, nil), cio.WithTerminal, cio.WithFIFODir(d.FIFODir)))
		if err != nil {
			t.Fatalf("exec: %v", err)
		}
		rawC := startProc(t, ctx, "exec raw", proc)
		waitFor(t, 10*time.Second, "ready", func() bool { return len(out.String()) > 0 })
		if _, err := inW.Write([]byte("abc")); err != nil {
			t.Fatal(err)
		}
		time.Sleep(300 * time.Millisecond)
		inW.Close()
		if err := proc.CloseIO(ctx, client.WithStdinCloser); err != nil {
			t.Fatalf("CloseIO: %v", err)
		}
		select {
		case st := <-rawC:
			t.Logf("raw exec exit status %d", st.ExitCode())
		case <-time.After(10 * time.Second):
			t.Errorf("the raw exec still ran 10 s after CloseIO: its terminal was not hung up")
			_ = proc.Kill(ctx, 9)
			<-rawC
		}
		if _, err := proc.Delete(ctx); err != nil {
			t.Errorf("exec delete: %v", err)
		}

		var od lockedBuffer
		ospec := execSpec(t, ctx, task, "od", "-An", "-c", "/tmp/f")
		oproc, err := task.Exec(ctx, "od", ospec, cio.NewCreator(cio.WithStreams(nil, &od, &od), cio.WithFIFODir(d.FIFODir)))
		if err != nil {
			t.Fatalf("exec od: %v", err)
		}
		exitCode(t, ctx, startProc(t, ctx, "exec od", oproc))
		waitIO(t, "od", oproc.IO())
		_, _ = oproc.Delete(ctx)
		if got, want := od.String(), "   a   b   c\n"; got != want {
			t.Errorf("what cat read in raw mode (od -c): %q, want %q (the client sent %q)", got, want, "abc")
		}
		_ = task.Kill(ctx, 9)
		<-statusC
		_, _ = task.Delete(ctx)
	})
}
