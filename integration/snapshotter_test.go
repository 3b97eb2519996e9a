package integration

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/oci"

	"github.com/example/containerd-shim-example-v2/integration/harness"
)

// containerd's blockfile snapshotter keeps each snapshot as a filesystem image and hands
// the rootfs to the shim as {Type: ext4, Source: <image>, Options: [loop, rw]}. The shim
// mounts it from a loop device, as the stock shim does (before, the "loop" word went to
// ext4, which refused the image file as its device: the task failed to create). The
// container reads the image's files and writes its own, and the device is freed with the
// rootfs at Delete.
func TestBlockfileSnapshotterRootfs(t *testing.T) {
	for _, flavor := range []string{harness.Flavor2x, "2.2"} {
		t.Run("containerd-"+flavor, func(t *testing.T) {
			d := harness.StartDaemon(t, flavor, harness.WithBlockfileSnapshotter())
			ctx, _ := d.NewNamespace(t)
			ctx, cancel := context.WithTimeout(ctx, time.Minute)
			defer cancel()
			img, err := harness.ImportImage(ctx, d.Client(), "blockfile")
			if err != nil {
				t.Fatal(err)
			}
			const id = "bf"
			ctr, err := d.Client().NewContainer(ctx, id,
				containerd.WithImage(img),
				containerd.WithSnapshotter("blockfile"),
				containerd.WithNewSnapshot(id+"-rootfs", img),
				containerd.WithRuntime(harness.Runtime(), nil),
				containerd.WithNewSpec(oci.WithImageConfig(img), oci.WithProcessArgs("sh", "-c",
					`head -n1 /etc/passwd && echo written >/new && cat /new && awk '$2 == "/" {print "root on " $1 " " $3}' /proc/mounts`)),
			)
			if err != nil {
				t.Fatal(err)
			}
			var out bytes.Buffer
			task, statusC := startTask(t, ctx, ctr, cio.NewCreator(cio.WithStreams(nil, &out, &out), cio.WithFIFODir(d.FIFODir)))
			if code := exitCode(t, ctx, statusC); code != 0 {
				t.Fatalf("exit code %d, output %q", code, out.String())
			}
			devs := loopDevicesUnder(d.Root)
			if _, err := task.Delete(ctx); err != nil {
				t.Fatal(err)
			}
			got := out.String()
			for _, want := range []string{"root:x:0:0:", "written\n", "root on /dev/loop", " ext4"} {
				if !strings.Contains(got, want) {
					t.Errorf("output %q lacks %q", got, want)
				}
			}
			if len(devs) != 1 {
				t.Errorf("loop devices on the daemon's images while the task ran: %v, want one", devs)
			}
			deadline := time.Now().Add(5 * time.Second)
			for len(loopDevicesUnder(d.Root)) > 0 {
				if time.Now().After(deadline) {
					t.Fatalf("loop devices left after Delete: %v", loopDevicesUnder(d.Root))
				}
				time.Sleep(20 * time.Millisecond)
			}
		})
	}
}

// loopDevicesUnder lists the loop devices whose backing file is below dir.
func loopDevicesUnder(dir string) []string {
	var devs []string
	files, _ := filepath.Glob("/sys/block/loop*/loop/backing_file")
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err == nil && strings.HasPrefix(strings.TrimSpace(string(b)), dir+"/") {
			devs = append(devs, strings.Split(f, "/")[3])
		}
	}
	return devs
}
