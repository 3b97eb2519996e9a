package io

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"sync"
	"syscall"
	"time"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"

	"github.com/example/containerd-shim-example-v2/internal/procstat"
)

// Named limits of binary:// loggers.
const (
	// LoggerReadyTimeout bounds the wait for a logger to signal readiness
	// (close fd 5). containerd's stock shim waits forever, which hangs task
	// creation on a logger that forks before closing it.
	LoggerReadyTimeout = 10 * time.Second
	// loggerStopTimeout is how long a logger has to exit after SIGTERM
	// before it is killed: the stock shim's budget (binaryIOProcTermTimeout),
	// which loggers written for it may use in full to flush to a slow
	// backend.
	loggerStopTimeout = 12 * time.Second
	// loggerKillTimeout bounds the wait for its exit after SIGKILL, which
	// only an exit reported elsewhere outlasts (see stopLogger).
	loggerKillTimeout = 5 * time.Second
)

// loggerCommand builds the logger's command line from a binary:// or
// binary-v2:// URI: the path is the executable, and each query key becomes
// "key value" arguments, in sorted order so the command line is the same
// every time.
func loggerCommand(uri string) (*exec.Cmd, error) {
	u, err := url.Parse(uri)
	if err != nil || !isLoggerURI(uri) || !filepath.IsAbs(u.Path) || !localHost(u.Host) {
		return nil, fmt.Errorf("log URI %q: want binary:// or binary-v2:///absolute/path[?args]: %w", uri, errdefs.ErrInvalidArgument)
	}
	st, err := os.Stat(u.Path)
	if err != nil {
		return nil, fmt.Errorf("logger %s: %w", u.Path, classify(err))
	}
	if st.IsDir() || st.Mode()&0o111 == 0 {
		return nil, fmt.Errorf("logger %s is not an executable file: %w", u.Path, errdefs.ErrInvalidArgument)
	}
	q := u.Query()
	keys := make([]string, 0, len(q))
	for k := range q {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var args []string
	for _, k := range keys {
		args = append(args, k, q.Get(k))
	}
	return exec.Command(u.Path, args...), nil
}

// openLogger starts the binary:// logger: the process writes into pipes
// whose read ends the logger gets as fds 3 (stdout) and 4 (stderr); it
// closes fd 5 once it is ready to read. A binary-v2:// logger writes a byte
// to fd 5 first: without it, fd 5 ended because the logger failed.
func (p *Pipes) openLogger(uri string, env Env) error {
	if env.Spawn == nil {
		return fmt.Errorf("binary:// logging needs a process spawner: %w", errdefs.ErrNotImplemented)
	}
	cmd, err := loggerCommand(uri)
	if err != nil {
		return err
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("logger stdout pipe: %w", err)
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		outR.Close()
		outW.Close()
		return fmt.Errorf("logger stderr pipe: %w", err)
	}
	readyR, readyW, err := os.Pipe()
	if err != nil {
		outR.Close()
		outW.Close()
		errR.Close()
		errW.Close()
		return fmt.Errorf("logger ready pipe: %w", err)
	}
	p.rtOut, p.rtErr = outW, errW
	if p.terminal {
		p.consoleOut = readyFile{outW} // the pty's output goes to the logger's stdout
		p.rtOut = nil
		// Closed by the console relay when it ends, and by Close if the
		// console never came: else the logger never sees end of file.
		p.toClose = append(p.toClose, outW)
	}
	cmd.ExtraFiles = []*os.File{outR, errR, readyW}
	cmd.Env = []string{"CONTAINER_ID=" + env.ProcessID, "CONTAINER_NAMESPACE=" + env.Namespace}
	// Its own process group: a signal for the shim's group is not for it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	// Ready before the start: the exit may be reported at once.
	loggerExit, exited := p.expectLoggerExit()
	err = env.Spawn(cmd, exited)
	// The logger has its copies now (or failed to start); ours must go, or
	// the logger would never see end of file.
	outR.Close()
	errR.Close()
	readyW.Close()
	if err != nil {
		p.outputs.Done()
		readyR.Close()
		return fmt.Errorf("start logger %s: %w", cmd.Path, err)
	}
	p.logger, p.loggerExit = cmd.Process, loggerExit

	strict := hasScheme(uri, "binary-v2")
	ready := make(chan bool, 1) // whether a byte came
	go func() {
		var b [1]byte
		// Returns at the first byte, or at EOF: every holder closed fd 5.
		n, _ := readyR.Read(b[:])
		readyR.Close()
		ready <- n > 0
	}()
	readyTimeout := LoggerReadyTimeout
	if env.LoggerReadyTimeout > 0 {
		readyTimeout = env.LoggerReadyTimeout
	}
	timer := time.NewTimer(readyTimeout)
	defer timer.Stop()
	select {
	case called := <-ready:
		if strict && !called {
			return fmt.Errorf("logger %s: logging binary did not call ready (fd 5 closed without a byte; it may have crashed or exited early): %w", cmd.Path, errdefs.ErrFailedPrecondition)
		}
		// fd 5 had its byte or ended: closed by a ready logger, or by its
		// exit, whose report may come later (the kernel marks a process
		// exiting before it closes its files). An exited logger is fine if
		// a child of it reads on (a logger that daemonizes); else its pipes
		// lose their readers at once, though not always before fd 5 ends.
		exited := exitingChild(cmd.Process.Pid)
		select {
		case <-p.loggerExit:
			exited = true
		default:
		}
		settle := time.Duration(0)
		if exited {
			settle = loggerExitSettle
		}
		if !readersGoneWithin(settle, outW, errW) {
			p.holdLoggerPipes(exited, cmd.Process.Pid, outW, errW)
			return nil
		}
		return fmt.Errorf("logger %s exited (or closed its pipes) before it was ready: %w", cmd.Path, errdefs.ErrFailedPrecondition)
	case <-timer.C:
		readyR.Close()
		return fmt.Errorf("logger %s did not signal ready (close fd 5) within %s: %w", cmd.Path, readyTimeout, context.DeadlineExceeded)
	}
}

// expectLoggerExit readies the wait for a logger's exit: Drain waits for it
// (one more in outputs) and stopLogger on exit, which closes when exited, the
// callback for the reaper, is called (once).
func (p *Pipes) expectLoggerExit() (exit chan struct{}, exited func(int)) {
	exit = make(chan struct{})
	p.outputs.Add(1)
	var once sync.Once
	return exit, func(int) {
		once.Do(func() {
			close(exit)
			p.outputs.Done()
			p.loggerExited()
		})
	}
}

// stopLogger asks the logger to finish (SIGTERM), then kills it after
// loggerStopTimeout. Called by Close; a logger that already exited is left be.
// It waits for the exit at most loggerKillTimeout after the kill: an exit
// that never comes (a logger reaped by the daemon that handed it over in an
// upgrade, just before the switch) must not hang Close, and with it the
// process's Delete.
func (p *Pipes) stopLogger() {
	if p.logger == nil {
		return
	}
	select {
	case <-p.loggerExit:
		return
	default:
	}
	termWait, killWait := loggerStopTimeout, loggerKillTimeout
	if p.loggerStop > 0 {
		termWait, killWait = p.loggerStop, p.loggerStop
	}
	_ = p.logger.Signal(syscall.SIGTERM)
	select {
	case <-p.loggerExit:
		return
	case <-time.After(termWait):
	}
	if err := p.logger.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return
	}
	select {
	case <-p.loggerExit:
	case <-time.After(killWait):
		slog.Warn("binary:// logger: no exit seen after SIGKILL; not waiting for it any longer", "pid", p.logger.Pid)
	}
}

// loggerExitSettle bounds the wait, after a logger exited at its ready
// signal, for its pipes to lose their readers: they do within microseconds
// unless a child of the logger reads them.
const loggerExitSettle = 100 * time.Millisecond

// readersGoneWithin reports whether the pipes written through ws all lose
// their readers within d (at once when d is 0).
func readersGoneWithin(d time.Duration, ws ...*os.File) bool {
	deadline := time.Now().Add(d)
	for {
		gone := true
		for _, w := range ws {
			gone = gone && readerGone(w)
		}
		if gone || !time.Now().Before(deadline) {
			return gone
		}
		time.Sleep(time.Millisecond)
	}
}

// readerGone reports whether nobody holds the read end of the pipe whose
// write end is w (a poll that does not wait).
func readerGone(w *os.File) bool {
	rc, err := w.SyscallConn()
	if err != nil {
		return false
	}
	gone := false
	_ = rc.Control(func(fd uintptr) {
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLOUT}}
		if n, err := unix.Poll(fds, 0); err == nil && n > 0 {
			gone = fds[0].Revents&unix.POLLERR != 0
		}
	})
	return gone
}

// exitingChild reports whether pid, a child of the shim, is exiting or has
// exited (a child's PID is not reused before the shim reaps it).
func exitingChild(pid int) bool {
	st, err := procstat.Read(pid)
	if err != nil {
		// Gone: reaped already. Anything else (a /proc that does not show
		// the shim's children) proves nothing.
		return errors.Is(err, os.ErrNotExist) || errors.Is(err, syscall.ESRCH)
	}
	return st.Exiting()
}
