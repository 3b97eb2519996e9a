package io

import (
	"bytes"
	stdio "io"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// openPty opens a pty pair: the master as the runtime would send it (non-blocking,
// for the poller), the slave in raw mode (no echo, no newline translation), as the
// container's side.
func openPty(t *testing.T) (master, slave *os.File) {
	t.Helper()
	mfd, err := unix.Open("/dev/ptmx", unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		t.Skipf("no pty: %v", err)
	}
	if err := unix.IoctlSetPointerInt(mfd, unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetInt(mfd, unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	slave, err = os.OpenFile("/dev/pts/"+strconv.Itoa(n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	tio, err := unix.IoctlGetTermios(int(slave.Fd()), unix.TCGETS)
	if err != nil {
		t.Fatal(err)
	}
	tio.Lflag &^= unix.ECHO | unix.ICANON | unix.ISIG | unix.IEXTEN
	tio.Oflag &^= unix.OPOST
	tio.Iflag &^= unix.ICRNL | unix.IXON
	if err := unix.IoctlSetTermios(int(slave.Fd()), unix.TCSETS, tio); err != nil {
		t.Fatal(err)
	}
	return os.NewFile(uintptr(mfd), "ptmx"), slave
}

// A terminal's relays halted in the middle of a stream (the client not reading, so the
// output relay waits in a write), handed over to a new Pipes, and continued: every byte the
// process wrote arrives once and in order, input typed before and after reaches it, and the
// window size set before is still the pty's.
func TestTerminalHandedOver(t *testing.T) {
	outPath, inPath := mkfifo(t, "out"), mkfifo(t, "in")
	master, slave := openPty(t)
	defer slave.Close()
	p, err := Open(Config{Terminal: true, Stdout: outPath, Stdin: inPath}, Env{})
	if err != nil {
		t.Fatal(err)
	}
	startReading, got := lateReader(outPath, 1<<20) // a pty's output has no end of file
	clientIn, err := os.OpenFile(inPath, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer clientIn.Close()
	if err := p.AttachConsole(master); err != nil {
		t.Fatal(err)
	}
	if err := p.Resize(97, 33); err != nil {
		t.Fatal(err)
	}
	for i := 0; p.Halt(time.Second) != nil; i++ { // until the client's reader is there
		if i > 200 {
			t.Fatal("halt never possible")
		}
		time.Sleep(5 * time.Millisecond)
	}
	p.Restart()

	payload := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB, more than pty and FIFO hold
	wrote := make(chan error, 1)
	go func() { _, err := slave.Write(payload); wrote <- err }()
	clientIn.Write([]byte("typed-before;"))
	time.Sleep(50 * time.Millisecond)
	if err := p.Halt(2 * time.Second); err != nil {
		t.Fatal(err)
	}
	clientIn.Write([]byte("typed-during;"))
	st, err := p.Export(keepDups{})
	if err != nil {
		t.Fatal(err)
	}
	if st.Terminal == nil || st.Terminal.Out == nil || st.Terminal.Stdin == nil {
		t.Fatalf("state %+v", st)
	}
	next, err := ImportPipes(*st, adoptFD, Env{})
	if err != nil {
		t.Fatal(err)
	}
	p.Close() // the predecessor's files go away, as at execve
	clientIn.Write([]byte("typed-after;"))
	close(startReading)
	if err := <-wrote; err != nil {
		t.Fatal(err)
	}
	var b []byte
	select {
	case b = <-got:
	case <-time.After(10 * time.Second):
		t.Fatal("client did not get the stream")
	}
	if !bytes.Equal(b, payload) {
		t.Fatalf("client got %d bytes, want %d (or they differ)", len(b), len(payload))
	}
	want := "typed-before;typed-during;typed-after;"
	in := make([]byte, 0, len(want))
	buf := make([]byte, 256)
	_ = slave.SetReadDeadline(time.Now().Add(5 * time.Second))
	for len(in) < len(want) {
		n, err := slave.Read(buf)
		if err != nil && err != stdio.EOF {
			t.Fatalf("terminal input: %q then %v", in, err)
		}
		in = append(in, buf[:n]...)
	}
	if string(in) != want {
		t.Fatalf("terminal input %q, want %q", in, want)
	}
	ws, err := unix.IoctlGetWinsize(int(slave.Fd()), unix.TIOCGWINSZ)
	if err != nil || ws.Col != 97 || ws.Row != 33 {
		t.Fatalf("window size %+v (%v), want 97x33", ws, err)
	}
	if err := next.Resize(120, 40); err != nil {
		t.Fatalf("resize after the handover: %v", err)
	}
	next.Close()
}

// CloseIO on a terminal in canonical mode after a line typed without its
// newline: the process reads that line, then end of file (one ^D would only
// have handed the line over, and the process would wait for input forever).
// Also when the relays were halted after the partial line and run again, or
// handed over: the partial line is remembered across both.
func TestTerminalEndOfInputAfterAPartialLine(t *testing.T) {
	for _, mode := range []string{"none", "restart", "handover"} {
		t.Run(mode, func(t *testing.T) { testEndOfInputAfterAPartialLine(t, mode) })
	}
}

func testEndOfInputAfterAPartialLine(t *testing.T, mode string) {
	p, clientIn, slave := canonicalTerminal(t)
	cur := p
	defer func() { cur.Close() }()
	clientIn.Write([]byte("abc"))
	if mode != "none" {
		time.Sleep(50 * time.Millisecond) // "abc" is in the pty
		cur = haltAndGoOn(t, p, mode)
	}
	clientIn.Close()
	cur.CloseStdin()
	expectLineThenEOF(t, slave, "abc")
}

// canonicalTerminal is a terminal whose process side (slave) has a line
// discipline as a shell's cat has it (canonical, no echo), with a client
// reading its output and writing its input (clientIn).
func canonicalTerminal(t *testing.T) (p *Pipes, clientIn, slave *os.File) {
	t.Helper()
	outPath, inPath := mkfifo(t, "out"), mkfifo(t, "in")
	master, slave := openPty(t)
	t.Cleanup(func() { slave.Close() })
	tio, err := unix.IoctlGetTermios(int(slave.Fd()), unix.TCGETS)
	if err != nil {
		t.Fatal(err)
	}
	tio.Lflag |= unix.ICANON
	if err := unix.IoctlSetTermios(int(slave.Fd()), unix.TCSETS, tio); err != nil {
		t.Fatal(err)
	}
	if p, err = Open(Config{Terminal: true, Stdout: outPath, Stdin: inPath}, Env{}); err != nil {
		t.Fatal(err)
	}
	startReading, _ := lateReader(outPath, 1<<10)
	close(startReading)
	if clientIn, err = os.OpenFile(inPath, os.O_WRONLY, 0); err != nil {
		t.Fatal(err)
	}
	if err := p.AttachConsole(master); err != nil {
		t.Fatal(err)
	}
	return p, clientIn, slave
}

// expectLineThenEOF has the process (slave) read line, then end of file,
// within 3 s.
func expectLineThenEOF(t *testing.T, slave *os.File, line string) {
	t.Helper()
	readc := make(chan []string, 1)
	go func() {
		var reads []string
		buf := make([]byte, 64)
		for len(reads) < 2 {
			n, err := slave.Read(buf)
			if err != nil && err != stdio.EOF {
				break
			}
			reads = append(reads, string(buf[:n]))
		}
		readc <- reads
	}()
	select {
	case reads := <-readc:
		if len(reads) != 2 || reads[0] != line || reads[1] != "" {
			t.Errorf("the process read %q, want %q, then end of file", reads, line)
		}
		// One end of file, not more: a second ^D (a successor writing the
		// pending one, then ending the input again) would end the next read
		// of a process that reads on, as a shell does after ^D.
		fds := []unix.PollFd{{Fd: int32(slave.Fd()), Events: unix.POLLIN}}
		if n, _ := unix.Poll(fds, 200); n > 0 {
			t.Errorf("more input after the end of file (revents %#x): an end-of-file character twice", fds[0].Revents)
		}
	case <-time.After(3 * time.Second):
		slave.Close() // ends the blocked read
		t.Fatal("no end of input within 3 s: the process would wait for input forever")
	}
}

// A process that exited (Hangup) while a child of it still holds the
// terminal, its relay halted and run again or handed over with the client's
// FIFO full: the relay still drains what was written and ends, instead of
// waiting for the pty to hang up, which the child prevents.
func TestTerminalHangupOutlivesAHalt(t *testing.T) {
	for _, mode := range []string{"restart", "handover"} {
		t.Run(mode, func(t *testing.T) {
			outPath := mkfifo(t, "out")
			master, slave := openPty(t)
			defer slave.Close() // the child still holding the terminal
			p, err := Open(Config{Terminal: true, Stdout: outPath}, Env{})
			if err != nil {
				t.Fatal(err)
			}
			startReading, got := lateReader(outPath, 0)
			if err := p.AttachConsole(master); err != nil {
				t.Fatal(err)
			}
			payload := bytes.Repeat([]byte("x"), 100<<10) // more than the FIFO takes
			wrote := make(chan error, 1)
			go func() { _, err := slave.Write(payload); wrote <- err }()
			time.Sleep(100 * time.Millisecond)
			p.Hangup()
			cur := haltAndGoOn(t, p, mode)
			defer cur.Close()
			close(startReading)
			if !cur.Drain(3 * time.Second) {
				t.Fatal("the terminal's relay did not end after the hang-up")
			}
			cur.Close() // the client's FIFO ends, and the pty: the rest of the write fails
			select {
			case <-wrote:
			case <-time.After(5 * time.Second):
				t.Error("the writer stayed blocked after the pty was closed")
			}
			if b := <-got; len(b) < 64<<10 || !bytes.Equal(b, payload[:len(b)]) {
				t.Errorf("the client got %d bytes (or not the payload's); want what filled its FIFO and more", len(b))
			}
		})
	}
}

// A terminal whose output has ended (the process exited, the pty hung up
// and drained; the task not deleted yet) is handed over twice: the second
// binary halts and exports it like the first did, and its input's end is
// handed on as well.
func TestEndedTerminalHandedOverTwice(t *testing.T) {
	p, slave := terminalWithInputEnded(t)
	slave.Close() // the process is gone
	p.Hangup()
	if !p.Drain(3 * time.Second) {
		t.Fatal("the terminal's relay did not end")
	}
	cur := haltAndGoOn(t, p, "handover")
	cur = haltAndGoOn(t, cur, "handover") // the second binary's halt and export
	defer cur.Close()
	if term := haltAndExport(t, cur).Terminal; term == nil || !term.OutEnded || !term.StdinEnded {
		t.Errorf("the third export: %+v, want the output and the input ended", term)
	}
}

// A terminal's input ended (CloseIO) is still ended after two handovers: a
// later binary must not start the input relay again, which would read end
// of file at once and send the process a second end-of-file character.
func TestTerminalEndOfInputHandedOverTwice(t *testing.T) {
	p, slave := terminalWithInputEnded(t)
	defer slave.Close()
	cur := haltAndGoOn(t, p, "handover")
	defer cur.Close()
	// What the second binary hands on, before a third could act on it.
	if term := haltAndExport(t, cur).Terminal; term == nil || !term.StdinEnded {
		t.Errorf("the second binary's export: %+v, want the input ended", term)
	}
}

// attachedTerminal is a terminal process's stdio with a client reading its
// output, the pty (openPty's, raw) attached. It returns the pipes, the
// process's side of the pty and the client's stdin writer.
func attachedTerminal(t *testing.T) (*Pipes, *os.File, *os.File) {
	t.Helper()
	outPath, inPath := mkfifo(t, "out"), mkfifo(t, "in")
	master, slave := openPty(t)
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
	return p, slave, clientIn
}

// terminalWithInputEnded is a terminal with a client reading its output
// and its input ended by CloseIO: the process (slave) has read the
// end-of-file character.
func terminalWithInputEnded(t *testing.T) (*Pipes, *os.File) {
	t.Helper()
	p, slave, clientIn := attachedTerminal(t)
	cbreak(t, slave) // raw, it would be sent no end-of-file character
	clientIn.Close()
	p.CloseStdin()
	eof := make([]byte, 1)
	if _, err := slave.Read(eof); err != nil || eof[0] != 4 {
		t.Fatalf("the process read %q (%v), want the end-of-file character", eof, err)
	}
	return p, slave
}

// haltAndExport halts p and returns what it would hand over.
func haltAndExport(t *testing.T, p *Pipes) *PipesState {
	t.Helper()
	if err := p.Halt(time.Second); err != nil {
		t.Fatal(err)
	}
	st, err := p.Export(keepDups{})
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// haltAndGoOn halts p's relays (retrying until its client's reader is
// there) and has them go on: run again ("restart"), or handed over to new
// Pipes ("handover"), p then closed as at execve. It returns the Pipes that
// go on.
func haltAndGoOn(t *testing.T, p *Pipes, mode string) *Pipes {
	t.Helper()
	next, _ := haltAndGoOnWithState(t, p, mode)
	return next
}

// haltAndGoOnWithState is haltAndGoOn, also returning what was handed over
// (nil for "restart").
func haltAndGoOnWithState(t *testing.T, p *Pipes, mode string) (*Pipes, *PipesState) {
	t.Helper()
	for i := 0; p.Halt(time.Second) != nil; i++ {
		if i > 200 {
			t.Fatal("halt never possible")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if mode == "restart" {
		p.Restart()
		return p, nil
	}
	st, next := exportedAndImported(t, p)
	return next, st
}

// The end-of-file character of CloseIO waits for a pty that takes no input
// (its output is stopped here, TCOOFF; a process slow to read fills the
// input queue alike) when the relays are halted, then go on: the character
// is still written, by the relay run again or by the next binary, and the
// process reads end of file.
func TestTerminalEndOfInputWaitingAcrossAHalt(t *testing.T) {
	for _, mode := range []string{"restart", "handover"} {
		t.Run(mode, func(t *testing.T) {
			p, clientIn, slave := canonicalTerminal(t)
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
			clientIn.Write([]byte("abc\n"))
			time.Sleep(50 * time.Millisecond) // the line is in the pty
			flow(p, unix.TCOOFF)
			clientIn.Close()
			p.CloseStdin()
			time.Sleep(100 * time.Millisecond) // the relay waits to write ^D
			cur := haltAndGoOn(t, p, mode)
			defer cur.Close()
			flow(cur, unix.TCOON)
			expectLineThenEOF(t, slave, "abc\n")
		})
	}
}

// A terminal's output relay stopped by a halt that came too late (the halt
// gave up, the relay had just committed) is run again with the input relay
// never asked to halt: the restart returns, and both relays go on.
func TestTerminalRestartAfterOnlyTheOutputHalted(t *testing.T) {
	p, clientIn, slave := canonicalTerminal(t)
	defer p.Close()
	dst, err := p.consoleDst.ready() // the write end, once the client's reader is there
	if err != nil {
		t.Fatal(err)
	}
	if !p.consoleHalt.halt(p.master, dst, 2*time.Second) {
		t.Fatal("the output relay did not halt")
	}
	restarted := make(chan struct{})
	go func() { p.restartConsole(); close(restarted) }()
	select {
	case <-restarted:
	case <-time.After(5 * time.Second):
		t.Fatal("the restart waits for the input relay, which was never asked to halt")
	}
	clientIn.Write([]byte("abc\n"))
	clientIn.Close()
	p.CloseStdin()
	expectLineThenEOF(t, slave, "abc\n")
}

// A terminal whose output goes to a file:// log, handed over in the middle of
// a stream: every byte the process wrote is in the log once and in order.
func TestTerminalToALogFileHandedOver(t *testing.T) {
	logPath := filepath.Join(t.TempDir(), "tty.log")
	master, slave := openPty(t)
	defer slave.Close()
	p, err := Open(Config{Terminal: true, Stdout: "file://" + logPath}, Env{})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.AttachConsole(master); err != nil {
		t.Fatal(err)
	}
	payload := bytes.Repeat([]byte("0123456789abcdef"), 1<<14) // 256 KiB, more than the pty holds
	wrote := make(chan error, 1)
	go func() { _, err := slave.Write(payload); wrote <- err }()
	time.Sleep(20 * time.Millisecond)
	next := handOverTerminal(t, p, false, Env{})
	defer next.Close()
	if err := <-wrote; err != nil {
		t.Fatal(err)
	}
	if _, err := slave.Write([]byte("after")); err != nil {
		t.Fatal(err)
	}
	want := append(payload, "after"...)
	waitForFile(t, logPath, want)
}

// A terminal whose output goes to a binary:// logger (nerdctl's `run -dt`
// does this), handed over: the logger runs on, the successor waits for it,
// and what the process writes before and after reaches it once, in order.
func TestTerminalToALoggerHandedOver(t *testing.T) {
	out := filepath.Join(t.TempDir(), "logged")
	uri := "binary://" + writeScript(t, "exec 5>&-\nexec cat <&3 > "+out+"\n")
	master, slave := openPty(t)
	defer slave.Close()
	p, err := Open(Config{Terminal: true, Stdout: uri}, Env{ProcessID: "c", Namespace: "n", Spawn: spawnPlain(t)})
	if err != nil {
		t.Fatal(err)
	}
	p.ReleaseRuntimeFiles()
	if err := p.AttachConsole(master); err != nil {
		t.Fatal(err)
	}
	logger := p.logger.Pid
	if _, err := slave.Write([]byte("before;")); err != nil {
		t.Fatal(err)
	}
	waitForFile(t, out, []byte("before;"))
	claim := func(pid int, exited func(int)) {
		go func() {
			for unix.Kill(pid, 0) == nil {
				time.Sleep(10 * time.Millisecond)
			}
			exited(0)
		}()
	}
	next := handOverTerminal(t, p, true, Env{Claim: claim})
	if next.logger == nil || next.logger.Pid != logger {
		t.Fatalf("the successor waits for logger %v, want %d", next.logger, logger)
	}
	if _, err := slave.Write([]byte("after")); err != nil {
		t.Fatal(err)
	}
	waitForFile(t, out, []byte("before;after"))
	next.Close()
	if unix.Kill(logger, 0) == nil {
		t.Error("the logger still runs after the successor's Close")
	}
}

// handOverTerminal halts a terminal's relays, exports them and imports them
// into a new Pipes; it checks that the output went over as a log or a
// logger's pipe (toPipe). The predecessor is left as it is (its Close would
// stop the logger, which execve does not).
func handOverTerminal(t *testing.T, p *Pipes, toPipe bool, env Env) *Pipes {
	t.Helper()
	if err := p.Handable(); err != nil {
		t.Fatalf("a terminal writing to a log or logger: %v", err)
	}
	if err := p.Halt(2 * time.Second); err != nil {
		t.Fatal(err)
	}
	st, err := p.Export(keepDups{})
	if err != nil {
		t.Fatal(err)
	}
	if st.Terminal == nil || st.Terminal.Log == nil || st.Terminal.Log.Pipe != toPipe || st.Terminal.Out != nil {
		t.Fatalf("terminal state %+v, want its output as a log (pipe: %v)", st.Terminal, toPipe)
	}
	next, err := ImportPipes(*st, adoptFD, env)
	if err != nil {
		t.Fatal(err)
	}
	return next
}

// waitForFile waits (5 s at most) until the file at path holds want.
func waitForFile(t *testing.T, path string, want []byte) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		got, _ := os.ReadFile(path)
		if bytes.Equal(got, want) {
			return
		}
		if time.Now().After(deadline) || len(got) > len(want) {
			t.Fatalf("%s holds %d bytes (%.40q...), want %d", path, len(got), got, len(want))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A terminal whose output relay has ended (the init exited and the pty
// drained, Hangup) while something still holds the terminal and reads its
// input: after a halt that is undone (an upgrade refused) and after a
// handover, the input relay runs as it ran. It stayed halted in both (from
// a review).
func TestTerminalInputRunsOnAfterItsOutputEnded(t *testing.T) {
	for _, mode := range []string{"control", "restart", "handover"} {
		t.Run(mode, func(t *testing.T) {
			p, slave, clientIn := attachedTerminal(t)
			defer slave.Close() // a background child still holding the terminal
			defer clientIn.Close()
			p.Hangup() // the init exited
			deadline := time.Now().Add(3 * time.Second)
			for !p.consoleHalt.ended.Load() {
				if time.Now().After(deadline) {
					t.Fatal("the output relay did not end after the hang-up")
				}
				time.Sleep(5 * time.Millisecond)
			}
			if mode != "control" {
				// "restart": the upgrade was refused after the halt;
				// "handover": the next binary goes on.
				p = haltAndGoOn(t, p, mode)
			}
			defer p.Close()
			if _, err := clientIn.Write([]byte("typed\n")); err != nil {
				t.Fatal(err)
			}
			got := make(chan []byte, 1)
			go func() {
				b := make([]byte, 64)
				n, _ := slave.Read(b)
				got <- b[:n]
			}()
			select {
			case b := <-got:
				if string(b) != "typed\n" {
					t.Fatalf("the terminal read %q", b)
				}
			case <-time.After(2 * time.Second):
				t.Fatal("input typed after the halt never reached the terminal: its relay stays halted")
			}
		})
	}
}
