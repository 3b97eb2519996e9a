package harness

import (
	"context"
	"errors"
	"fmt"
	"syscall"
	"testing"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/errdefs"
)

// LeakTimeout bounds how long cleanup waits for a namespace's shims and mounts to go.
var LeakTimeout = 10 * time.Second

// NewNamespace creates a unique namespace ("ex-<rand>") on the daemon, imports and
// unpacks the test image into it, and returns a context carrying it. t.Cleanup then removes
// every task and container left in it, fails the test if shims, mounts, runc state or
// bundles of the namespace outlive that (and kills/cleans what leaked), removes the
// namespace's cgroup parent, and prints what the daemon logged during the test when the
// test failed.
func (d *Daemon) NewNamespace(t testing.TB) (context.Context, string) {
	t.Helper()
	return d.NamedNamespace(t, "ex-"+RandID(10))
}

// NamedNamespace is NewNamespace with a name of the caller's, for behaviour tied to a
// namespace (Docker's "moby"). One test at a time may use a name on a daemon.
func (d *Daemon) NamedNamespace(t testing.TB, ns string) (context.Context, string) {
	t.Helper()
	logStart := d.LogSize()
	d.TrackNamespace(ns)
	ctx := namespaces.WithNamespace(context.Background(), ns)

	t.Cleanup(func() {
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		if err := CleanupNamespace(cctx, d.Client(), ns); err != nil {
			t.Errorf("cleanup of namespace %s: %v", ns, err)
		}
		if left := d.WaitNoLeftovers(ns, "", LeakTimeout); len(left) > 0 {
			t.Errorf("namespace %s: leftovers %v after its tasks and containers were removed", ns, left)
			d.KillShims(ns, "")
			_ = d.forceDeleteRunc(ns)
		}
		// The runtime made /<ns> (the parent of each container's /<ns>/<id>) in every
		// cgroup hierarchy, and nothing else removes it: left alone, thousands pile up
		// over test runs.
		if err := RemoveCgroup("/" + ns); err != nil {
			t.Errorf("namespace %s: cgroup parent left: %v", ns, err)
		}
		if t.Failed() {
			t.Logf("containerd %s log during this test (%s):\n%s", d.Flavor, d.LogPath, d.LogSince(logStart, 24<<10))
		}
	})

	ictx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	if _, err := ImportImage(ictx, d.Client(), ""); err != nil {
		t.Fatalf("containerd %s: import test image into %s: %v", d.Flavor, ns, err)
	}
	return ctx, ns
}

// CleanupNamespace kills and deletes every task (and its execs) and deletes every container
// (with its snapshot) in namespace ns. Errors are collected, not fatal, so it does as much as
// it can.
func CleanupNamespace(ctx context.Context, c *containerd.Client, ns string) error {
	ctx = namespaces.WithNamespace(ctx, ns)
	ctrs, err := c.Containers(ctx)
	if err != nil {
		return err
	}
	var errs []error
	for _, ctr := range ctrs {
		if err := DeleteContainer(ctx, ctr); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", ctr.ID(), err))
		}
	}
	return errors.Join(errs...)
}

// CallTimeout bounds each API call made while cleaning up, so a hung shim costs seconds,
// not the whole cleanup budget.
var CallTimeout = 10 * time.Second

func callCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, CallTimeout)
}

// DeleteContainer removes a container's task (SIGKILL, wait for it to stop, delete) and
// then the container and its snapshot. A missing task or container is not an error.
func DeleteContainer(ctx context.Context, ctr containerd.Container) error {
	cctx, cancel := callCtx(ctx)
	task, err := ctr.Task(cctx, nil)
	cancel()
	switch {
	case err == nil:
		if err := deleteTask(ctx, task); err != nil {
			return err
		}
	case errdefs.IsNotFound(err):
	default:
		return fmt.Errorf("load task: %w", err)
	}
	cctx, cancel = callCtx(ctx)
	err = ctr.Delete(cctx, containerd.WithSnapshotCleanup)
	cancel()
	if err != nil && !errdefs.IsNotFound(err) {
		return fmt.Errorf("delete container: %w", err)
	}
	return nil
}

func deleteTask(ctx context.Context, task containerd.Task) error {
	status := func() (containerd.Status, error) {
		cctx, cancel := callCtx(ctx)
		defer cancel()
		return task.Status(cctx)
	}
	st, err := status()
	if err != nil {
		if errdefs.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("task status: %w", err)
	}
	if st.Status != containerd.Stopped {
		cctx, cancel := callCtx(ctx)
		err := task.Kill(cctx, syscall.SIGKILL, containerd.WithKillAll)
		cancel()
		if err != nil && !errdefs.IsNotFound(err) {
			return fmt.Errorf("kill task: %w", err)
		}
		deadline := time.Now().Add(CallTimeout)
		for {
			st, err = status()
			if err != nil && errdefs.IsNotFound(err) {
				return nil
			}
			if err == nil && (st.Status == containerd.Stopped || st.Status == containerd.Created && task.Pid() == 0) {
				break
			}
			if time.Now().After(deadline) || ctx.Err() != nil {
				return fmt.Errorf("task %s did not stop within %v of SIGKILL (status %q, err %v)", task.ID(), CallTimeout, st.Status, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	cctx, cancel := callCtx(ctx)
	defer cancel()
	if _, err := task.Delete(cctx, containerd.WithProcessKill); err != nil && !errdefs.IsNotFound(err) {
		return fmt.Errorf("delete task: %w", err)
	}
	return nil
}
