package launch

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	taskapi "github.com/example/containerd-shim-example-v2/proto/api/runtime/task/v2"
	"google.golang.org/protobuf/types/known/timestamppb"

	bundlefiles "github.com/example/containerd-shim-example-v2/bundle"
	"github.com/example/containerd-shim-example-v2/oci"
	"github.com/example/containerd-shim-example-v2/process"
	"github.com/example/containerd-shim-example-v2/proto/codec"
	"github.com/example/containerd-shim-example-v2/reaper"
	"github.com/example/containerd-shim-example-v2/sandbox"
)

// deleteTimeout bounds the runtime call of the `delete` action; containerd
// itself gives the whole action 5 s by default. (A variable for tests.)
var deleteTimeout = 4 * time.Second

// unmountRootfs is process.UnmountRootfs; a variable for tests, which cannot
// make the kernel refuse an unmount for a reason other than a busy mount.
var unmountRootfs = process.UnmountRootfs

// killedStatus is what `delete` reports for a task whose daemon is gone and
// whose real exit is unknown: 128 + SIGKILL, as containerd's own shims do.
const killedStatus = 128 + 9

// Delete runs the `delete` action: containerd calls it after the connection
// to a task's daemon closed (after every normal teardown, and when the daemon
// died). It removes the runtime's container and unmounts the rootfs, works
// when any of that is already gone, never touches the bundle directory itself
// or a live daemon's socket, and prints a DeleteResponse.
func Delete(f Flags, stdout io.Writer) error {
	if err := checkTask(f); err != nil {
		return fmt.Errorf("delete: %w", err)
	}
	bundle := f.Bundle
	if bundle == "" {
		wd, err := os.Getwd()
		if err != nil {
			return fmt.Errorf("bundle: %w", err)
		}
		bundle = wd
	}
	rt, err := oci.Load(bundle, filepath.Join(oci.DefaultRoot, f.Namespace))
	if err != nil {
		slog.Warn("runtime record unreadable, using defaults", "error", err)
	}
	if rt.HasState(f.ID) {
		// The reaper runs until the runtime call has returned, not until its
		// deadline: a runtime killed at the deadline must still be reaped for
		// the call to return.
		r := reaper.New()
		reaping, stopReaping := context.WithCancel(context.Background())
		defer stopReaping()
		go r.Run(reaping)
		ctx, cancel := context.WithTimeout(context.Background(), deleteTimeout)
		defer cancel()
		rt.Reaper = r
		if same, ok := rt.IsBundleOf(ctx, f.ID, bundle); ok && !same {
			// Another daemon's container of that id (daemons of one
			// namespace share the runtime's root): this task's Create
			// failed on it, and it is not this cleanup's to remove.
			fmt.Fprintf(os.Stderr, "the runtime's container %s is another bundle's: left alone\n", f.ID)
		} else {
			if err := rt.Delete(ctx, f.ID, true); err != nil && rt.HasState(f.ID) {
				// Reported to containerd (it logs our stderr) but not
				// fatal: the rest of the cleanup still has to happen.
				fmt.Fprintf(os.Stderr, "force delete of %s: %v\n", f.ID, err)
			}
			// A runtime killed with its daemon during a create left the
			// container's cgroups, which its delete does not find.
			if err := process.RemoveCgroupsLeft(bundle, rt.SystemdCgroup); err != nil {
				fmt.Fprintf(os.Stderr, "cgroups of %s left: %v\n", f.ID, err)
			}
		}
	}
	if err := unmountRootfs(bundle); err != nil {
		// A warning, not a failure: containerd logs our stderr either way,
		// but on a failed `delete` it drops the response and reports the
		// task's exit as 255, losing the status recorded below; the pod
		// and socket cleanup after this would not run either. The stock
		// shim warns and goes on too.
		fmt.Fprintf(os.Stderr, "rootfs of %s left mounted: %v\n", f.ID, err)
	}
	// A pod sandbox's bundle lists what its daemon made for the pod (files,
	// /dev/shm, the holder's cgroup): a daemon that died before
	// ShutdownSandbox leaves them to this.
	if err := sandbox.Cleanup(bundle); err != nil {
		fmt.Fprintf(os.Stderr, "clean up pod sandbox %s: %v\n", f.ID, err)
	}
	removeDeadSocket(bundle)
	resp := &taskapi.DeleteResponse{ExitStatus: killedStatus, ExitedAt: timestamppb.Now()}
	if pid, err := oci.ReadPidFile(filepath.Join(bundle, bundlefiles.InitPidFile)); err == nil {
		resp.Pid = uint32(pid)
	}
	// The daemon records the init's exit before publishing it: if it died
	// after the container exited, that real status is the answer.
	if e, ok, err := bundlefiles.ReadExit(bundle); ok {
		resp.Pid, resp.ExitStatus, resp.ExitedAt = uint32(e.Pid), uint32(e.Status), timestamppb.New(e.ExitedAt)
	} else if err != nil {
		slog.Warn("exit record unreadable", "error", err)
	}
	out, err := codec.Marshal(resp)
	if err != nil {
		return fmt.Errorf("encode delete response: %w", err)
	}
	_, err = stdout.Write(out)
	return err
}

// removeDeadSocket removes the task's daemon socket when nothing answers on
// it any more (the daemon was killed). A live daemon still serving other
// tasks of its group answers, and its socket is left alone.
func removeDeadSocket(bundle string) {
	path, err := socketOfBundle(bundle)
	if err != nil || !filepath.IsAbs(path) {
		return
	}
	unlock, err := lockSocketDir(filepath.Dir(path))
	if err != nil {
		return
	}
	defer unlock()
	_, _ = removeIfDead(path)
}
