package integration

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/pkg/cio"

	"github.com/example/containerd-shim-example-v2/integration/harness"
)

// A container and an exec in it logging to the same CRI file with a size cap
// (ctr run --log-uri ... and ctr task exec --log-uri ... with one URI): every
// file stays within max-size, and no line is lost. Each process rotated by
// its own count of what it wrote, and the files grew to twice the cap.
func TestCRILogOfTaskAndExecKeepsOneCap(t *testing.T) {
	forEachFlavor(t, func(t *testing.T, d *harness.Daemon) {
		ctx, ns := d.NewNamespace(t)
		ctx, cancel := context.WithTimeout(ctx, 90*time.Second)
		defer cancel()
		const id = "logcap"
		path := filepath.Join(t.TempDir(), "c.log")
		u, err := url.Parse("file://" + path + "?format=cri&max-size=32KiB&max-files=4")
		if err != nil {
			t.Fatal(err)
		}
		loop := `i=0; while [ $i -lt 400 ]; do printf '%s %03d %090d\n' "$0" $i 0; i=$((i+1)); [ $((i%20)) = 0 ] && sleep 0.05; done`
		ctr := newContainer(t, ctx, d, id, []string{"sh", "-c", loop + "; exec sleep 37", "task"})
		task, statusC := startTask(t, ctx, ctr, cio.LogURI(u))
		proc, err := task.Exec(ctx, "e1", execSpec(t, ctx, task, "sh", "-c", loop, "exec"), cio.LogURI(u))
		if err != nil {
			t.Fatalf("exec: %v", err)
		}
		if code := exitCode(t, ctx, startProc(t, ctx, "exec", proc)); code != 0 {
			t.Fatalf("exec exit %d", code)
		}
		if _, err := proc.Delete(ctx); err != nil {
			t.Fatalf("delete exec: %v", err)
		}
		files := []string{path, path + ".1", path + ".2", path + ".3"}
		waitFor(t, 30*time.Second, "the task's last line", func() bool {
			for _, f := range files {
				if data, _ := os.ReadFile(f); strings.Contains(string(data), " task 399 ") {
					return true
				}
			}
			return false
		})
		if err := task.Kill(ctx, 9); err != nil {
			t.Fatalf("kill: %v", err)
		}
		exitCode(t, ctx, statusC)
		if _, err := task.Delete(ctx); err != nil {
			t.Fatalf("delete: %v", err)
		}
		for _, f := range files {
			st, err := os.Stat(f)
			if err != nil {
				continue
			}
			t.Logf("%s: %d bytes", filepath.Base(f), st.Size())
			if st.Size() > 32<<10 {
				t.Errorf("%s is %d bytes, over max-size=32KiB", filepath.Base(f), st.Size())
			}
		}
		seen := map[string]bool{}
		for _, f := range files {
			data, _ := os.ReadFile(f)
			for _, line := range strings.Split(string(data), "\n") {
				if m := criRecord.FindStringSubmatch(line); m != nil {
					seen[strings.Fields(m[4])[0]+" "+strings.Fields(m[4])[1]] = true
				}
			}
		}
		// ~112 KiB of records, 128 KiB allowed: nothing had to go.
		for _, who := range []string{"task", "exec"} {
			var missing []int
			for i := 0; i < 400; i++ {
				if !seen[fmt.Sprintf("%s %03d", who, i)] {
					missing = append(missing, i)
				}
			}
			if len(missing) > 0 {
				t.Errorf("%d of the %s's 400 lines missing (first %d, last %d)", len(missing), who, missing[0], missing[len(missing)-1])
			}
		}
		expectNoLeftovers(t, d, ns, id)
	})
}
