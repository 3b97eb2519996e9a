package io

import (
	"errors"
	stdio "io"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// rawTerminalInputEnded is a terminal whose process side reads without line
// editing (openPty's raw mode), after the client wrote "ab" and CloseIO
// ended its input: the process has read "ab" and the end-of-file character.
func rawTerminalInputEnded(t *testing.T) (*Pipes, *os.File) {
	t.Helper()
	grace := rawEndOfInputGrace
	rawEndOfInputGrace = 100 * time.Millisecond
	t.Cleanup(func() { rawEndOfInputGrace = grace })
	outPath, inPath := mkfifo(t, "out"), mkfifo(t, "in")
	master, slave := openPty(t)
	t.Cleanup(func() { slave.Close() })
	p, err := Open(Config{Terminal: true, Stdout: outPath, Stdin: inPath}, Env{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	startReading, _ := lateReader(outPath, 0)
	close(startReading)
	clientIn, err := os.OpenFile(inPath, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.AttachConsole(master); err != nil {
		t.Fatal(err)
	}
	if _, err := clientIn.Write([]byte("ab")); err != nil {
		t.Fatal(err)
	}
	clientIn.Close()
	p.CloseStdin()
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
	return p, slave
}

// A process without line editing reads the end-of-file character as a byte
// and goes on waiting: once it has read it and not exited within the grace,
// its terminal is hung up, so its next read ends (end of file) and its
// writes fail, as the stock shim's hang-up makes them.
func TestRawTerminalIsHungUpAfterItsEndOfInput(t *testing.T) {
	_, slave := rawTerminalInputEnded(t)
	readc := make(chan error, 1)
	go func() {
		n, err := slave.Read(make([]byte, 8))
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
		t.Fatal("the terminal was not hung up: the process would wait for input for ever")
	}
	if _, err := slave.Write([]byte("x")); !errors.Is(err, unix.EIO) {
		t.Errorf("a write to the terminal after the end of input: %v, want EIO (hung up)", err)
	}
}

// A process that exits after reading the end-of-file character (a shell's
// line editor takes it as the end) is not hung up: nothing of its terminal
// is cut while its last output drains.
func TestTerminalOfAnExitedProcessIsNotHungUp(t *testing.T) {
	p, slave := rawTerminalInputEnded(t)
	p.Hangup() // its exit
	time.Sleep(3 * rawEndOfInputGrace)
	if _, err := slave.Write([]byte("x")); err != nil {
		t.Errorf("a write to the terminal of an exited process: %v; it was hung up", err)
	}
}
