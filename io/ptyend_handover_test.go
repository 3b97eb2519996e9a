package io

import (
	"errors"
	stdio "io"
	"os"
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
	grace := rawEndOfInputGrace
	rawEndOfInputGrace = 100 * time.Millisecond
	t.Cleanup(func() { rawEndOfInputGrace = grace })
	outPath, inPath := mkfifo(t, "out"), mkfifo(t, "in")
	master, slave := openPty(t) // raw: no line editing
	t.Cleanup(func() { slave.Close() })
	p, err := Open(Config{Terminal: true, Stdout: outPath, Stdin: inPath}, Env{})
	if err != nil {
		t.Fatal(err)
	}
	startReading, _ := lateReader(outPath, 0)
	close(startReading)
	clientIn, err := os.OpenFile(inPath, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.AttachConsole(master); err != nil {
		t.Fatal(err)
	}
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
	var got []byte
	buf := make([]byte, 8)
	for len(got) < 4 {
		n, err := slave.Read(buf)
		if err != nil || n == 0 {
			t.Fatalf("the process read %q, then %v", got, err)
		}
		got = append(got, buf[:n]...)
	}
	if string(got) != "ab\x04\x04" {
		t.Fatalf("the process read %q, want %q", got, "ab\x04\x04")
	}
	readc := make(chan error, 1)
	go func() {
		n, err := slave.Read(buf)
		if err == nil && n > 0 {
			err = errors.New("more input")
		}
		readc <- err
	}()
	select {
	case err := <-readc:
		if !errors.Is(err, stdio.EOF) {
			t.Errorf("read after the end of input: %v, want end of file", err)
		}
	case <-time.After(3 * time.Second):
		slave.Close()
		t.Fatal("the terminal was not hung up after the upgrade: the process would wait for input for ever")
	}
}
