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
// editing but is not raw (cbreak: `stty -icanon`), after the client wrote
// "ab" and CloseIO ended its input: the process has read "ab" and the
// end-of-file character.
func rawTerminalInputEnded(t *testing.T) (*Pipes, *os.File) {
	t.Helper()
	p, slave := terminalSentAbThenEnded(t, cbreak)
	expectTerminalRead(t, slave, "ab\x04\x04")
	return p, slave
}

// terminalSentAbThenEnded is a terminal, set up by mode, to which the client
// wrote "ab" and whose input CloseIO then ended.
func terminalSentAbThenEnded(t *testing.T, mode func(*testing.T, *os.File)) (*Pipes, *os.File) {
	t.Helper()
	p, slave, clientIn := attachedTerminal(t)
	mode(t, slave)
	t.Cleanup(func() { slave.Close() })
	t.Cleanup(p.Close)
	if _, err := clientIn.Write([]byte("ab")); err != nil {
		t.Fatal(err)
	}
	clientIn.Close()
	p.CloseStdin()
	return p, slave
}

// cbreak turns output processing back on for a terminal openPty made raw:
// no line editing, but not raw (rawInput), so the end of its input is the
// end-of-file character, then the hang-up.
func cbreak(t *testing.T, slave *os.File) {
	t.Helper()
	tio, err := unix.IoctlGetTermios(int(slave.Fd()), unix.TCGETS)
	if err == nil {
		tio.Oflag |= unix.OPOST
		err = unix.IoctlSetTermios(int(slave.Fd()), unix.TCSETS, tio)
	}
	if err != nil {
		t.Fatal(err)
	}
}

// expectTerminalRead reads the process's side of a pty until it has as
// many bytes as want, and fails unless they are want.
func expectTerminalRead(t *testing.T, slave *os.File, want string) {
	t.Helper()
	var got []byte
	buf := make([]byte, 8)
	for len(got) < len(want) {
		n, err := slave.Read(buf)
		if err != nil || n == 0 {
			t.Fatalf("the process read %q, then %v", got, err)
		}
		got = append(got, buf[:n]...)
	}
	if string(got) != want {
		t.Fatalf("the process read %q, want %q", got, want)
	}
}

// expectHungUp fails unless the process's next read of its terminal ends
// (end of file: hung up) within 3 s; what says when.
func expectHungUp(t *testing.T, slave *os.File, what string) {
	t.Helper()
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
		t.Fatalf("the terminal was not hung up %s: the process would wait for input for ever", what)
	}
}

// A process without line editing reads the end-of-file character as a byte
// and goes on waiting: once it has read it and not exited within the grace,
// its terminal is hung up, so its next read ends (end of file) and its
// writes fail, as the stock shim's hang-up makes them.
func TestRawTerminalIsHungUpAfterItsEndOfInput(t *testing.T) {
	_, slave := rawTerminalInputEnded(t)
	expectHungUp(t, slave, "after its end of input")
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

// A raw terminal (`stty raw; cat > file`) is sent no end-of-file character
// at the end of its input, which would be a byte of the file: the process
// reads what the client sent, and then its terminal is hung up. Before, it
// read "ab\x04\x04"; the stock shim's hang-up adds nothing either.
func TestRawTerminalInputEndsWithoutAByte(t *testing.T) {
	_, slave := terminalSentAbThenEnded(t, func(*testing.T, *os.File) {}) // openPty's raw mode
	expectTerminalRead(t, slave, "ab")
	expectHungUp(t, slave, "after its end of input")
}
