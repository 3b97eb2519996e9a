package io

import (
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// A terminal read without line editing whose input CloseIO ended just
// before an in-place upgrade is still hung up once its process has read the
// end-of-file characters, now by the next binary: the end-of-file
// characters were written before the switch and not yet read ("ended"), or
// were still waiting to be written, the pty taking no input ("pending").
// Before, the watch that hangs it up ended with the old binary, and the
// process waited for input for ever.
func TestRawTerminalHungUpAfterAnUpgrade(t *testing.T) {
	for _, mode := range []string{"ended", "pending"} {
		t.Run(mode, func(t *testing.T) { testRawTerminalHungUpAfterAnUpgrade(t, mode) })
	}
}

func testRawTerminalHungUpAfterAnUpgrade(t *testing.T, mode string) {
	p, slave, clientIn := attachedTerminal(t)
	cbreak(t, slave) // no line editing, but sent the end-of-file characters
	t.Cleanup(func() { slave.Close() })
	flow := func(p *Pipes, action int) {
		rc, err := p.master.SyscallConn()
		if err != nil {
			t.Fatal(err)
		}
		rc.Control(func(fd uintptr) {
			if err := unix.IoctlSetInt(int(fd), unix.TCXONC, action); err != nil {
				t.Fatal(err)
			}
		})
	}
	if _, err := clientIn.Write([]byte("ab")); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond) // "ab" is in the pty
	if mode == "pending" {
		flow(p, unix.TCOOFF) // the end-of-file characters cannot be written
	}
	clientIn.Close()
	p.CloseStdin()
	if mode == "ended" {
		for i := 0; !p.stdinHalt.ended.Load(); i++ {
			if i > 200 {
				t.Fatal("the input relay did not end")
			}
			time.Sleep(5 * time.Millisecond)
		}
	} else {
		time.Sleep(100 * time.Millisecond) // the relay waits to write them
	}
	next := haltAndGoOn(t, p, "handover") // p closed, as at execve
	t.Cleanup(next.Close)
	if mode == "pending" {
		flow(next, unix.TCOON)
	}
	expectTerminalRead(t, slave, "ab\x04\x04")
	expectHungUp(t, slave, "after the upgrade")
}
