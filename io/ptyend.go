package io

import (
	"log/slog"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// The end of a terminal's input (CloseIO) is its end-of-file character
// (runConsole). A process that reads its terminal with line editing off
// (ICANON clear) gets that character as a plain byte: a line editor (a
// shell's prompt) takes it as the end, but a program in raw or cbreak mode
// (full-screen programs, `stty -icanon`) reads it and waits for more, for
// ever. For such a terminal the end of input is then completed as the stock
// shim makes it, by a hang-up: once the character has been read, if the
// process has not exited within rawEndOfInputGrace and the terminal does not
// edit lines, its side of the pty is hung up (SIGHUP to its session and
// foreground group, end of file on its reads). The master stays open, so
// what the process wrote still reaches the client. The mode that counts is
// the one after the read: the character may be written while the terminal
// edits lines and read after a program turned it raw (input that ran out
// before that program started), so every terminal whose input ended is
// watched until its character has been read. A terminal that is raw when
// the input ends (rawInput) is not sent the character at all: a program
// copying its input (`stty raw; cat > file`) would keep it as data, where
// the stock shim's hang-up adds nothing. It is hung up the same way once
// what the client sent has been read.

// Limits of the watch; variables for the tests.
var (
	// rawEndOfInputGrace is how long a process that has read the
	// end-of-file character has to exit before its terminal is hung up.
	rawEndOfInputGrace = time.Second
	// endOfInputPoll bounds the pause between two looks at whether the
	// character has been read (the pause doubles from 10 ms).
	endOfInputPoll = 500 * time.Millisecond
)

// watchEndOfInput runs on its own goroutine after the end-of-file character
// was written to a terminal; it ends when the process exits (Hangup), the
// pipes close, or the character has been read and the grace is over.
func (p *Pipes) watchEndOfInput(master *os.File) {
	pause := 10 * time.Millisecond
	for {
		if p.hungUp.Load() {
			return
		}
		unread, err := peerHasUnreadInput(master)
		if err != nil {
			return // closed, or no peer to look at: the character stays the end
		}
		if !unread {
			break
		}
		time.Sleep(pause)
		pause = min(2*pause, endOfInputPoll)
	}
	time.Sleep(rawEndOfInputGrace) // one look after it: its exit may come at any time within
	if p.hungUp.Load() || lineEditing(master) {
		return // exited, or reading lines again: the character was its end
	}
	if err := hangUpPeer(master); err != nil {
		slog.Warn("terminal end of input: hang-up failed", "error", err)
	}
}

// resumeEndOfInputWatch watches a handed-over terminal whose input had
// ended (its end-of-file characters written) before the switch: the
// predecessor's watch ended with it, and the process may not have read the
// characters yet, or have read them within the grace. A watch that had
// finished there decides the same here: a process that exited (Hangup) or
// edits lines is left alone, and a terminal hung up already is only hung up
// again.
func (p *Pipes) resumeEndOfInputWatch() {
	if !p.hungUp.Load() {
		go p.watchEndOfInput(p.master)
	}
}

// lineEditing reports whether the terminal behind a pty master edits lines
// (ICANON set on its side), and so takes the end-of-file character as the
// end of input. A termios that cannot be read counts as line editing.
func lineEditing(master *os.File) bool {
	t, err := peerTermios(master)
	return err != nil || t.Lflag&unix.ICANON != 0
}

// rawInput reports whether the terminal behind a pty master is raw: no
// line editing and no output processing, as cfmakeraw and `stty raw` leave
// it. There a byte written is a byte of the input, the end-of-file
// character too, so the end of input is the hang-up alone. A line editor
// at a shell's prompt clears ICANON too, but keeps OPOST, and takes the
// character as the end; so does a termios that cannot be read.
func rawInput(master *os.File) bool {
	t, err := peerTermios(master)
	return err == nil && t.Lflag&unix.ICANON == 0 && t.Oflag&unix.OPOST == 0
}

// peerTermios reads the terminal settings of the other side of a pty master
// (the master answers for it).
func peerTermios(master *os.File) (*unix.Termios, error) {
	rc, err := master.SyscallConn()
	if err != nil {
		return nil, err
	}
	var t *unix.Termios
	var terr error
	if err := rc.Control(func(fd uintptr) { t, terr = unix.IoctlGetTermios(int(fd), unix.TCGETS) }); err != nil {
		return nil, err
	}
	return t, terr
}

// withPeer runs fn with a descriptor of the terminal on the other side of a
// pty master (TIOCGPTPEER), closed afterwards.
func withPeer(master *os.File, fn func(peer int) error) error {
	rc, err := master.SyscallConn()
	if err != nil {
		return err
	}
	peer := -1
	var perr error
	err = rc.Control(func(fd uintptr) {
		r, _, errno := unix.Syscall(unix.SYS_IOCTL, fd, unix.TIOCGPTPEER, unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC)
		if errno != 0 {
			perr = errno
			return
		}
		peer = int(r)
	})
	if err == nil {
		err = perr
	}
	if err != nil {
		return err
	}
	defer unix.Close(peer)
	return fn(peer)
}

// peerHasUnreadInput reports whether the terminal holds input its process
// has not read. What is written to the master reaches the terminal's queue
// through the kernel's buffer work, which a poll of the terminal completes
// first: bytes just written would otherwise count as none. The poll's own
// answer counts too: while the terminal edits lines, an end-of-file
// character not yet read is an empty line that makes it readable, but no
// byte that TIOCINQ counts.
func peerHasUnreadInput(master *os.File) (bool, error) {
	var unread bool
	err := withPeer(master, func(peer int) error {
		fds := []unix.PollFd{{Fd: int32(peer), Events: unix.POLLIN}}
		_, _ = unix.Poll(fds, 0)
		n, err := unix.IoctlGetInt(peer, unix.TIOCINQ)
		unread = n > 0 || fds[0].Revents&unix.POLLIN != 0
		return err
	})
	return unread, err
}

// hangUpPeer hangs up the terminal on the other side of a pty master, as a
// dropped line does; the master stays open.
func hangUpPeer(master *os.File) error {
	return withPeer(master, func(peer int) error {
		if _, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(peer), unix.TIOCVHANGUP, 0); errno != 0 {
			return errno
		}
		return nil
	})
}
