package integration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/example/containerd-shim-example-v2/integration/harness"
)

// Under CRI, containerd itself reads a container's stdout FIFO. A container that writes
// its last lines and exits while containerd is down leaves them in the FIFO, where they
// live only while some end of it is open; CRI reopens the FIFO in its recovery after the
// restart and copies what it finds into the container's log before it deletes the task.
// So the shim must not close its ends of a FIFO that still holds unread output when the
// stream ends: "ender" writes 3000 lines and exits with 7 while containerd is down;
// after the restart its CRI log holds every
// line and its exit code is 7. "writer" writes throughout: no line lost or repeated.
// (The stock shim closes at once and loses ender's lines, and under 2.x its exit code.)
// The outage is short: the lines were lost as the process exited. With "upgraded", the
// shim is upgraded in place while containerd is down, after ender exited: the successor
// holds the FIFO on for CRI's reader (they were lost at the switch).
func TestCRIOutputOfAnExitWhileContainerdIsDown(t *testing.T) {
	for _, flavor := range harness.AllFlavors {
		for _, upgraded := range []bool{false, true} {
			name := "containerd-" + flavor
			if upgraded {
				name += "-upgraded"
			}
			t.Run(name, func(t *testing.T) { testCRIOutputOfAnExitWhileContainerdIsDown(t, flavor, upgraded) })
		}
	}
}

func testCRIOutputOfAnExitWhileContainerdIsDown(t *testing.T, flavor string, upgraded bool) {
	var newBin string
	if upgraded {
		newBin = secondShimBuild(t)
	}
	d, cri := harness.StartCRIDaemon(t, flavor)
	restartForCleanup(t, d)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if err := cri.WaitReady(ctx, harness.ImageName); err != nil {
		t.Fatal(err)
	}
	pod := runCRIPod(t, ctx, d, cri, "rcri-"+harness.RandID(5))
	writer := createCRIContainer(t, ctx, cri, pod, "writer", []string{"sh", "-c",
		`i=0; while :; do i=$((i+1)); echo "a $i"; [ $((i % 20)) -eq 0 ] && sleep 0.01; done`}, nil)
	startCRIContainer(t, ctx, cri, writer, "writer")
	ender := createCRIContainer(t, ctx, cri, pod, "ender", []string{"sh", "-c",
		`while [ ! -e /tmp/go ]; do sleep 0.1; done; i=0; while [ $i -lt 3000 ]; do i=$((i+1)); echo "b $i"; done; exit 7`}, nil)
	startCRIContainer(t, ctx, cri, ender, "ender")
	var enderPid int
	waitFor(t, 10*time.Second, "ender's init", func() bool {
		for _, p := range harness.Processes(func(a []string) bool { return len(a) == 3 && a[0] == "sh" && strings.Contains(a[2], "/tmp/go") }) {
			if cg, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", p.Pid)); strings.Contains(string(cg), ender) {
				enderPid = p.Pid
			}
		}
		return enderPid != 0
	})
	time.Sleep(time.Second)

	if err := d.StopProcess(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(fmt.Sprintf("/proc/%d/root/tmp/go", enderPid), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "ender exits", func() bool { return !harness.PidExists(enderPid) })
	time.Sleep(3 * time.Second)
	if upgraded {
		if out, err := upgradeShim(t, ctx, "-address", shimAddress(t, d, "k8s.io", ender), "-binary", newBin); err != nil {
			t.Fatalf("upgrade while containerd is down: %v\n%s", err, out)
		}
	}
	// The shim holds every byte ender wrote for the next reader (its
	// successor too, after the upgrade).
	wantBytes := uint64(0)
	for i := 1; i <= 3000; i++ {
		wantBytes += uint64(len(fmt.Sprintf("b %d\n", i)))
	}
	if harness.Runtime() == "io.example.v2" { // the stock shim has no introspection
		if held := initProcessOf(t, d, ender).ClientQueued; held != wantBytes {
			t.Errorf("ender: the shim holds %d bytes in its stdout FIFO while containerd is down, want %d", held, wantBytes)
		}
	}
	logStart := d.LogSize()
	if err := d.StartProcess(); err != nil {
		t.Fatal(err)
	}
	if err := cri.WaitReady(ctx, harness.ImageName); err != nil {
		t.Fatal(err)
	}

	st := waitCRIState(t, ctx, cri, ender, "ender", runtimeapi.ContainerState_CONTAINER_EXITED, 20*time.Second)
	if st.ExitCode != 7 {
		t.Errorf("ender: exit code %d after the restart, want 7", st.ExitCode)
	}
	check := func(name, id, prefix string, want int) {
		path := filepath.Join(pod.logDir, name+"_0.log")
		eventually(10*time.Second, func() bool {
			data, _ := os.ReadFile(path)
			return want == 0 || strings.Count(string(data), "\n") >= want
		})
		var lines []string
		if data, err := os.ReadFile(path); err != nil {
			t.Fatalf("%s: %v", name, err)
		} else if len(data) > 0 {
			lines = readCRILog(t, path)
		}
		last := 0
		var gaps []string
		for _, l := range lines {
			var v int
			if _, err := fmt.Sscanf(l, "stdout "+prefix+" %d", &v); err != nil {
				t.Errorf("%s: log record %q", name, l)
				continue
			}
			if v != last+1 {
				gaps = append(gaps, fmt.Sprintf("line %d after line %d", v, last))
			}
			last = v
		}
		t.Logf("%s: %d lines in the CRI log, the last %d, %d gaps", name, len(lines), last, len(gaps))
		// containerd reads the FIFO in one goroutine and writes the log in
		// another: what it had read when it was stopped dies with it. One
		// run of lines lost so, of a stream the shim says it dropped
		// nothing of (every byte went into the FIFO, and only a reader
		// takes bytes out of it), is containerd's.
		if want == 0 && harness.Runtime() == "io.example.v2" {
			p := initProcessOf(t, d, id)
			t.Logf("%s: the shim relayed %d bytes, dropped %d", name, p.OutputBytes, p.DroppedBytes)
			if len(gaps) == 1 && p.DroppedBytes == 0 {
				t.Logf("%s: %s: lost by containerd at its stop (the shim dropped nothing)", name, gaps[0])
				gaps = nil
			}
		}
		for i, g := range gaps {
			if i < 3 {
				t.Errorf("%s: %s", name, g)
			}
		}
		// containerd 1.6's CRI recovers an exited container by opening its
		// FIFOs (in a goroutine of the fifo library's), starting its copy (a
		// goroutine of its own) and deleting its task, and the Delete first
		// cancels that open: when those goroutines run late (a busy
		// machine), CRI closes its reader before its first read and reads
		// nothing whatever the shim holds: "reading from a closed fifo" when
		// the open had not returned, "file already closed" when it had. A
		// read from a FIFO fails only through its reader's own doing (a
		// writer gone is end of file), so any failed copy is CRI's. The
		// shim's part was asserted above.
		if failed := criCopyFailed(d.LogSince(logStart, 8<<20), ender); want > 0 && len(lines) == 0 && failed != "" {
			t.Logf("%s: CRI closed its own reader of the FIFO before its first read (containerd 1.6's recovery); nothing to check:\n%s", name, failed)
			return
		}
		if want > 0 && (len(lines) != want || last != want) {
			t.Errorf("%s: %d lines up to %d in the CRI log, want the %d it wrote while containerd was down", name, len(lines), last, want)
			t.Logf("containerd's log since the restart, the lines about %s:\n%s", name, linesAbout(d.LogSince(logStart, 8<<20), ender))
		}
	}
	check("ender", ender, "b", 3000)
	check("writer", writer, "a", 0)
}

// initProcessOf is id's init as the shim's introspection reports it.
func initProcessOf(t *testing.T, d *harness.Daemon, id string) introspectedProcess {
	t.Helper()
	for _, task := range introspect(t, d.BundleDir("k8s.io", id)).Tasks {
		if task.ID != id {
			continue
		}
		for _, p := range task.Processes {
			if p.ExecID == "" {
				return p
			}
		}
	}
	t.Fatalf("introspection names no task %s", id)
	return introspectedProcess{}
}

// criCopyFailed is the line of containerd's log (from the restart on) that
// says CRI's copy of id's stdout failed, if there is one.
func criCopyFailed(log, id string) string {
	for _, line := range strings.Split(log, "\n") {
		if strings.Contains(line, `level=error msg="Failed to pipe stdout of container \"`+id+`\""`) {
			return line
		}
	}
	return ""
}

// linesAbout is what of log names id (or a FIFO), each line cut to 600
// bytes: where CRI's copy of a container's output went after a restart.
func linesAbout(log, id string) string {
	var out []string
	for _, line := range strings.Split(log, "\n") {
		if strings.Contains(line, id) || strings.Contains(line, "fifo") {
			if len(line) > 600 {
				line = line[:600] + "..."
			}
			out = append(out, "    "+line)
		}
	}
	return strings.Join(out, "\n")
}
