package holder

import (
	"errors"
	"os"
	"os/signal"
	"time"

	"golang.org/x/sys/unix"
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
