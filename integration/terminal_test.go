package integration

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/console"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/oci"

	"github.com/example/containerd-shim-example-v2/integration/harness"
)

var (
	ptsLine  = regexp.MustCompile(`(?m)^/dev/pts/[0-9]+$`)
	sttySize = regexp.MustCompile(`rows ([0-9]+); columns ([0-9]+);`)
)

// waitForSize is a shell snippet that waits (at most 5 s) until the terminal has
// rows×cols: ctr resizes the container's terminal only after the task started.
func waitForSize(rows, cols int) string {
	return fmt.Sprintf(`i=0; until stty -a 2>/dev/null | grep -q "rows %d; columns %d;" || [ $i -ge 50 ]; do sleep 0.1; i=$((i+1)); done`, rows, cols)
}

// Terminal 1: `ctr run -t` under a real terminal: the container's stdout is a pty of its
// own (/dev/pts/N), it gets ctr's window size, and its exit code comes back.
func TestTerminalCtrRun(t *testing.T) {
	forEachFlavor(t, func(t *testing.T, d *harness.Daemon) {
		ctx, ns := d.NewNamespace(t)
		ctx, cancel := context.WithTimeout(ctx, 45*time.Second)
		defer cancel()
		const id = "tty1"
		out, code := ctrUnderPty(t, ctx, d, console.WinSize{Height: 31, Width: 101},
			ctrRun(d, "-t", "--rm", harness.ImageName, id, "sh", "-c", waitForSize(31, 101)+"; tty; stty -a; exit 3")...)
		if code != 3 {
			t.Errorf("ctr run -t exit code %d, want 3; terminal output:\n%s", code, out)
		}
		if !ptsLine.MatchString(out) {
			t.Errorf("`tty` in the container did not print /dev/pts/N; terminal output:\n%s", out)
		}
		checkSttySize(t, out, 31, 101)
		expectNoLeftovers(t, d, ns, id)
	})
}

// Terminal 2: `ctr task exec -t` under a real terminal, into a container without one.
func TestTerminalCtrExec(t *testing.T) {
	forEachFlavor(t, func(t *testing.T, d *harness.Daemon) {
		ctx, _ := d.NewNamespace(t)
		ctx, cancel := context.WithTimeout(ctx, 45*time.Second)
		defer cancel()
		const id = "tty2"
		ctrOK(t, ctx, d, ctrRun(d, append([]string{"-d", harness.ImageName, id}, loopArgs...)...)...)
		waitTaskStatus(t, ctx, d, id, "RUNNING", 10*time.Second)

		out, code := ctrUnderPty(t, ctx, d, console.WinSize{Height: 27, Width: 93},
			"task", "exec", "-t", "--fifo-dir", d.FIFODir, "--exec-id", "e1", id,
			"sh", "-c", waitForSize(27, 93)+"; tty; stty -a; exit 4")
		if code != 4 {
			t.Errorf("ctr task exec -t exit code %d, want 4; terminal output:\n%s", code, out)
		}
		if !ptsLine.MatchString(out) {
			t.Errorf("`tty` in the exec did not print /dev/pts/N; terminal output:\n%s", out)
		}
		checkSttySize(t, out, 27, 93)
		if row := ctrTaskList(t, ctx, d)[id]; row.Status != "RUNNING" {
			t.Errorf("container after the tty exec: status %q, want RUNNING", row.Status)
		}
	})
}

// Terminal 3: ResizePty through the Go client changes the window size seen inside, for the
// init process and for an exec, each on its own terminal.
func TestTerminalResize(t *testing.T) {
	forEachFlavor(t, func(t *testing.T, d *harness.Daemon) {
		ctx, _ := d.NewNamespace(t)
		ctx, cancel := context.WithTimeout(ctx, 45*time.Second)
		defer cancel()
		// Both processes wait for /tmp/go, print their terminal settings, and the init then
		// waits for /tmp/end.
		const waitGo = "until [ -e /tmp/go ]; do sleep 0.05; done; stty -a"
		ctr := newContainer(t, ctx, d, "tty3", []string{"sh", "-c", waitGo + "; until [ -e /tmp/end ]; do sleep 0.05; done"}, oci.WithTTY)
		var initOut lockedBuffer
		task, statusC := startTask(t, ctx, ctr, cio.NewCreator(cio.WithStreams(nil, &initOut, nil), cio.WithTerminal, cio.WithFIFODir(d.FIFODir)))

		spec := execSpec(t, ctx, task, "sh", "-c", waitGo)
		spec.Terminal = true
		var execOut lockedBuffer
		proc, err := task.Exec(ctx, "e1", spec, cio.NewCreator(cio.WithStreams(nil, &execOut, nil), cio.WithTerminal, cio.WithFIFODir(d.FIFODir)))
		if err != nil {
			t.Fatalf("exec: %v", err)
		}
		execStatusC, err := proc.Wait(ctx)
		if err != nil {
			t.Fatalf("exec wait: %v", err)
		}
		if err := proc.Start(ctx); err != nil {
			t.Fatalf("exec start: %v", err)
		}

		if err := task.Resize(ctx, 123, 45); err != nil {
			t.Fatalf("resize init: %v", err)
		}
		if err := proc.Resize(ctx, 77, 22); err != nil {
			t.Fatalf("resize exec: %v", err)
		}
		if code := runExec(t, ctx, task, "go", "touch", "/tmp/go"); code != 0 {
			t.Fatalf("touch /tmp/go: exit status %d", code)
		}

		if code := exitCode(t, ctx, execStatusC); code != 0 {
			t.Errorf("tty exec: exit status %d, want 0", code)
		}
		waitIO(t, "tty exec", proc.IO())
		checkSttySize(t, execOut.String(), 22, 77)
		if _, err := proc.Delete(ctx); err != nil {
			t.Errorf("exec delete: %v", err)
		}

		waitFor(t, 10*time.Second, "init printed its terminal settings", func() bool {
			return sttySize.MatchString(initOut.String())
		})
		checkSttySize(t, initOut.String(), 45, 123)
		if code := runExec(t, ctx, task, "end", "touch", "/tmp/end"); code != 0 {
			t.Fatalf("touch /tmp/end: exit status %d", code)
		}
		if code := exitCode(t, ctx, statusC); code != 0 {
			t.Errorf("tty init: exit status %d, want 0", code)
		}
		waitIO(t, "tty init", task.IO())
		if _, err := task.Delete(ctx); err != nil {
			t.Errorf("delete: %v", err)
		}
	})
}

// Terminal 4: what a tty process writes right before it exits is not lost: 1000 numbered
// lines, then exit; every line arrives, in order.
func TestTerminalOutputNotLostAtExit(t *testing.T) {
	const n = 1000
	forEachFlavor(t, func(t *testing.T, d *harness.Daemon) {
		ctx, ns := d.NewNamespace(t)
		ctx, cancel := context.WithTimeout(ctx, 45*time.Second)
		defer cancel()
		const id = "tty4"
		ctr := newContainer(t, ctx, d, id, []string{"sh", "-c",
			fmt.Sprintf(`i=1; while [ $i -le %d ]; do echo "line $i"; i=$((i+1)); done; exit 6`, n)}, oci.WithTTY)
		var out lockedBuffer
		task, statusC := startTask(t, ctx, ctr, cio.NewCreator(cio.WithStreams(nil, &out, nil), cio.WithTerminal, cio.WithFIFODir(d.FIFODir)))
		if code := exitCode(t, ctx, statusC); code != 6 {
			t.Errorf("exit status %d, want 6", code)
		}
		waitIO(t, "tty init", task.IO())
		if _, err := task.Delete(ctx); err != nil {
			t.Errorf("delete: %v", err)
		}
		var want strings.Builder
		for i := 1; i <= n; i++ {
			fmt.Fprintf(&want, "line %d\n", i)
		}
		// The container's terminal turns "\n" into "\r\n".
		got := strings.ReplaceAll(out.String(), "\r\n", "\n")
		if got != want.String() {
			lines := strings.Split(strings.TrimRight(got, "\n"), "\n")
			t.Errorf("tty output: %d bytes in %d lines, want %d bytes in %d lines; last line %q",
				len(got), len(lines), want.Len(), n, lines[len(lines)-1])
		}
		expectNoLeftovers(t, d, ns, id)
	})
}

// checkSttySize checks that terminal output holds busybox `stty -a`'s "rows R; columns C;".
func checkSttySize(t *testing.T, out string, rows, cols int) {
	t.Helper()
	m := sttySize.FindStringSubmatch(out)
	if m == nil {
		t.Errorf("no `stty -a` size in the output:\n%s", out)
		return
	}
	if m[1] != fmt.Sprint(rows) || m[2] != fmt.Sprint(cols) {
		t.Errorf("terminal size inside: rows %s columns %s, want rows %d columns %d", m[1], m[2], rows, cols)
	}
}

// ctrUnderPty runs ctr under a new pseudo-terminal of size ws (see underPty).
func ctrUnderPty(t *testing.T, ctx context.Context, d *harness.Daemon, ws console.WinSize, args ...string) (string, int) {
	t.Helper()
	return underPty(t, ctx, d.CtrCmd(ctx, args...), ws)
}

// underPty runs a client command (ctr, docker) with a new pseudo-terminal of size ws as its
// controlling terminal and stdin, stdout and stderr, as an interactive user would. It
// returns everything the command wrote to the terminal (without "\r") and its exit code.
func underPty(t *testing.T, ctx context.Context, cmd *exec.Cmd, ws console.WinSize) (string, int) {
	t.Helper()
	master, slavePath, err := console.NewPty()
	if err != nil {
		t.Fatalf("new pty: %v", err)
	}
	defer master.Close()
	if err := master.Resize(ws); err != nil {
		t.Fatalf("pty size: %v", err)
	}
	slave, err := os.OpenFile(slavePath, os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatalf("open %s: %v", slavePath, err)
	}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = slave, slave, slave
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	// Kept: the credentials of a rootless daemon's client (harness.RootlessCmd).
	cmd.SysProcAttr.Setsid, cmd.SysProcAttr.Setctty, cmd.SysProcAttr.Ctty = true, true, 0
	err = cmd.Start()
	slave.Close()
	if err != nil {
		t.Fatalf("start %s: %v", cmd.Path, err)
	}
	// The master must be read all along, or the client blocks writing to its terminal.
	// Reading ends with EIO once no process holds the slave any more.
	var out bytes.Buffer
	readDone := make(chan struct{})
	go func() {
		_, _ = io.Copy(&out, master)
		close(readDone)
	}()
	err = cmd.Wait()
	select {
	case <-readDone:
	case <-time.After(5 * time.Second):
		t.Errorf("terminal still open 5s after %s exited", cmd.Path)
		master.Close()
		<-readDone
	}
	// Line ends pass through two terminals (the container's and this one), each of which may
	// turn "\n" into "\r\n".
	text := strings.ReplaceAll(out.String(), "\r", "")
	var ee *exec.ExitError
	switch {
	case err == nil:
		return text, 0
	case errors.As(err, &ee) && ee.Exited() && ctx.Err() == nil:
		return text, ee.ExitCode()
	}
	t.Fatalf("%s: %v (context: %v); terminal output:\n%s", strings.Join(cmd.Args, " "), err, ctx.Err(), text)
	return "", -1
}
