package holder

import (
	"errors"
	"fmt"
	"os"
	"os/signal"
	"time"

	"golang.org/x/sys/unix"

	"github.com/example/containerd-shim-example-v2/internal/selftrim"
)

// retrimDelay is when the Go holder trims itself a second time: its first
// rounds of waiting fault in the code of the scheduler, signals and poller.
const retrimDelay = time.Second

// Main is the Go holder, for architectures without a tiny one: the shim
// binary started with Action. The pod's namespaces are set up already (it was
// born in them); it waits until the shim closes the life pipe or dies, or a
// SIGTERM/SIGINT arrives, and as PID 1 of a pod's PID namespace it reaps
// every orphan meanwhile.
func Main() error {
	life := os.NewFile(lifeFD, "life")
	if life == nil {
		return errors.New("pod holder: started without its pipe (it is started by the shim, not by hand)")
	}
	// Its own /proc directory first, for trim, which reads it: the empty
	// root has no /proc.
	selftrim.KeepProc()
	if err := enterRoot(); err != nil {
		return err
	}
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, unix.SIGCHLD, unix.SIGTERM, unix.SIGINT)
	gone := make(chan struct{})
	go func() {
		// The shim never writes: a read returns only at EOF, when the last
		// write end closed (Stop, or the shim died).
		var b [1]byte
		_, _ = life.Read(b[:])
		close(gone)
	}()
	reapOrphans()
	trim()
	retrim := time.After(retrimDelay)
	for {
		select {
		case <-retrim:
			trim()
		case <-gone:
			return nil
		case sig := <-sigs:
			if sig != unix.SIGCHLD {
				return nil
			}
			reapOrphans()
		}
	}
}

// enterRoot makes the empty directory at rootFD the holder's root and
// working directory, and closes it, as the tiny holder does (see rootFD).
func enterRoot() error {
	if err := unix.Fchdir(rootFD); err != nil {
		return fmt.Errorf("pod holder: enter its root directory: %w", err)
	}
	if err := unix.Chroot("."); err != nil {
		return fmt.Errorf("pod holder: chroot: %w", err)
	}
	return unix.Close(rootFD)
}

// reapOrphans collects every exited child. A holder has children only as
// PID 1 of a pod's PID namespace: processes whose parent died inside the pod
// are re-parented to it, and would stay zombies without this.
func reapOrphans() {
	for {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil || pid <= 0 {
			return
		}
	}
}
