package io

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The shim's own read ends on a binary:// logger's pipes go over in an
// in-place upgrade. A process whose logger never read stderr (it closed
// fd 4), or whose logger exited before the switch, wrote on without
// SIGPIPE before the switch because those ends read its output; after it,
// its next write failed with EPIPE (a real process dies of SIGPIPE, exit
// 141) when the ends died with the old binary.
func TestLoggerEndsHandedOver(t *testing.T) {
	for _, mode := range []string{"stderr-unread", "logger-exited", "logger-exits-after"} {
		t.Run(mode, func(t *testing.T) { testLoggerEndsHandedOver(t, mode) })
	}
}

func testLoggerEndsHandedOver(t *testing.T, mode string) {
	out := filepath.Join(t.TempDir(), "out")
	script := "exec 4<&- 5>&-\ncat <&3 >" + out + "\n"
	if mode != "stderr-unread" {
		script = "exec 5>&-\nhead -c 3 <&3 >" + out + "\n" // reads 3 bytes, exits
	}
	p, err := Open(Config{Stdout: "binary://" + writeScript(t, script), Stderr: "binary://x"},
		Env{ProcessID: "c", Namespace: "n", Spawn: spawnPlain(t)})
	if err != nil {
		t.Fatal(err)
	}
	procOut, procErr := launchedProcess(t, p)
	defer procOut.Close()
	defer procErr.Close()
	if mode == "logger-exited" {
		writeWithin(t, procOut, 3, 5*time.Second, "stdout, read by the logger")
		awaitLoggerExit(t, p)
	}
	if err := p.Halt(time.Second); err != nil {
		t.Fatal(err)
	}
	st, err := p.Export(keepDups{})
	if err != nil {
		t.Fatal(err)
	}
	// execve: the old binary's descriptors are gone (its logger is not).
	p.loggerEnds.Load().close()
	claim := func(pid int, exited func(int)) {
		go func() {
			for unix.Kill(pid, 0) == nil {
				time.Sleep(10 * time.Millisecond)
			}
			exited(0)
		}()
	}
	next, err := ImportPipes(*st, adoptFD, Env{Claim: claim})
	if err != nil {
		t.Fatal(err)
	}
	defer next.Close()
	if mode == "logger-exits-after" {
		writeWithin(t, procOut, 3, 5*time.Second, "stdout, read by the logger")
		deadline := time.Now().Add(5 * time.Second)
		for unix.Kill(next.logger.Pid, 0) == nil && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
	}
	writeWithin(t, procErr, 256<<10, 5*time.Second, "stderr after the upgrade")
	if mode != "stderr-unread" {
		writeWithin(t, procOut, 256<<10, 5*time.Second, "stdout after the upgrade, the logger gone")
	} else {
		writeWithin(t, procOut, 4, 5*time.Second, "stdout after the upgrade")
	}
	procOut.Close()
	procErr.Close()
	if !next.Drain(5 * time.Second) {
		t.Fatal("not drained")
	}
	if mode == "stderr-unread" {
		if got, _ := os.ReadFile(out); string(got) != "xxxx" {
			t.Errorf("logger got %q", got)
		}
	}
}

// An Export that sees the logger's exit hands its pipes over as draining,
// even when it comes between the exit callback's two steps (loggerExit
// closed, the drain not begun): the successor has no exit to wait for and
// would hold them idle for ever, and the process would block once a pipe
// was full. Seen in TestLoggerEndsHandedOver/logger-exited under load.
func TestExportAfterTheLoggerExitDrainsItsEnds(t *testing.T) {
	// The logger's exit is reaped but not reported: the callback's first
	// step is taken below, by hand.
	unreported := func(cmd *exec.Cmd, _ func(int)) error {
		if err := cmd.Start(); err != nil {
			return err
		}
		go cmd.Wait()
		return nil
	}
	p, err := Open(Config{Stdout: "binary://" + writeScript(t, "exec 5>&-\nexec sleep 0.3\n"), Stderr: "binary://x"},
		Env{ProcessID: "c", Namespace: "n", Spawn: unreported})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	procOut, procErr := launchedProcess(t, p)
	defer procOut.Close()
	defer procErr.Close()
	deadline := time.Now().Add(5 * time.Second)
	for !groupGone(p.logger.Pid) {
		if time.Now().After(deadline) {
			t.Fatal("the logger did not exit")
		}
		time.Sleep(10 * time.Millisecond)
	}
	// The exit callback's first step alone: loggerExit closed, no drain.
	exited := make(chan struct{})
	close(exited)
	p.loggerExit = exited
	if err := p.Halt(time.Second); err != nil {
		t.Fatal(err)
	}
	st, err := p.Export(keepDups{})
	if err != nil {
		t.Fatal(err)
	}
	ends := st.LoggerEnds
	if st.LoggerPid != 0 || ends == nil || len(ends.Held) != 0 || len(ends.Draining) != 2 {
		t.Fatalf("exported logger pid %d, ends %+v; want no pid, both ends draining", st.LoggerPid, ends)
	}
	for _, fd := range append(ends.Held, ends.Draining...) {
		unix.Close(fd)
	}
}

// A logger that exited after its ready signal leaving a child to read goes
// over with its group to watch: the successor leaves the child every byte
// and drains the pipes once the group is empty. The old binary's Export
// drained them at once (the exit had come), in competition with the child.
func TestLoggerGroupHandedOver(t *testing.T) {
	out := filepath.Join(t.TempDir(), "out")
	script := "head -c 4 <&3 >" + out + " 4<&- 5>&- &\nexec 5>&-\nsleep 0.2\nexit 0\n"
	p, err := Open(Config{Stdout: "binary://" + writeScript(t, script), Stderr: "binary://x"},
		Env{ProcessID: "c", Namespace: "n", Spawn: spawnPlain(t)})
	if err != nil {
		t.Fatal(err)
	}
	procOut, procErr := launchedProcess(t, p)
	defer procOut.Close()
	defer procErr.Close()
	awaitLoggerExit(t, p)
	if err := p.Halt(time.Second); err != nil {
		t.Fatal(err)
	}
	st, err := p.Export(keepDups{})
	if err != nil {
		t.Fatal(err)
	}
	if ends := st.LoggerEnds; ends == nil || len(ends.Held) != 2 || len(ends.Draining) != 0 || ends.Group != p.logger.Pid {
		t.Fatalf("exported ends %+v; want both held, group %d to watch", ends, p.logger.Pid)
	}
	p.loggerEnds.Load().close() // execve: the old binary's descriptors are gone
	next, err := ImportPipes(*st, adoptFD, Env{})
	if err != nil {
		t.Fatal(err)
	}
	defer next.Close()
	writeWithin(t, procOut, 4, 5*time.Second, "stdout, read by the logger's child")
	writeWithin(t, procOut, 256<<10, 5*time.Second, "stdout after the child ended")
	writeWithin(t, procErr, 256<<10, 5*time.Second, "stderr after the child ended")
	if got, _ := os.ReadFile(out); string(got) != "xxxx" {
		t.Errorf("the logger's child got %q", got)
	}
}
