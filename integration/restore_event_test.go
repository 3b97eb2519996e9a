package integration

import (
	"context"
	"testing"
	"time"

	apievents "github.com/containerd/containerd/api/events"
	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/cio"

	"github.com/example/containerd-shim-example-v2/integration/harness"
)

// A task to be restored from the image the runc options name
// (WithRestoreImagePath: CriuImagePath) is announced by /tasks/create with
// that image as its Checkpoint, as the stock shim's is: a consumer tells a
// restore from a fresh start by it. containerd 2.x copies the option into
// the request for every runtime, 1.6 only for runtimes named
// io.containerd.runc*: under 1.6 the shim restored from the option but
// announced the request's empty path. Only the Create is needed (the
// restore itself, CRIU, runs at Start).
func TestRestoreCreateEventNamesCheckpoint(t *testing.T) {
	forEachFlavor(t, func(t *testing.T, d *harness.Daemon) {
		ctx, ns := d.NewNamespace(t)
		ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
		defer cancel()
		evs := subscribeTaskEvents(t, ctx, d, ns)
		images := t.TempDir()
		ctr := newContainer(t, ctx, d, "rst-"+harness.RandID(6), loopArgs)
		task, err := ctr.NewTask(ctx, cio.NullIO, containerd.WithRestoreImagePath(images))
		if err != nil {
			t.Fatalf("create to be restored from %s: %v", images, err)
		}
		defer func() { _, _ = task.Delete(ctx, containerd.WithProcessKill) }()
		got := evs.collect(t, 10*time.Second, "/tasks/create", func(e taskEvent) bool { return e.Topic == "/tasks/create" })
		if x := got[len(got)-1].Event.(*apievents.TaskCreate); x.Checkpoint != images {
			t.Errorf("/tasks/create of a task to be restored from %s: Checkpoint %q", images, x.Checkpoint)
		}
	})
}
