package integration

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	containerd "github.com/containerd/containerd/v2/client"

	"github.com/example/containerd-shim-example-v2/integration/harness"
)

// sandboxAnnotation is set by CRI on every container of a pod; shims group by it.
const sandboxAnnotation = "io.kubernetes.cri.sandbox-id"

// ownGroupAnnotation is the grouping annotation of the runtime under test, which takes
// precedence over sandboxAnnotation (the stock runc shim has its own).
func ownGroupAnnotation() string {
	if harness.Runtime() == "io.containerd.runc.v2" {
		return "io.containerd.runc.v2.group"
	}
	return "io.example.v2.group"
}

// Grouping: containers with the same group annotation share one shim process and one socket
// (identical `address` files); a container of another group gets its own; the runtime's own
// group annotation wins over the CRI sandbox id. Deleting one container of a group leaves the
// others and the shim alive (and serving, though the shim's cwd was the deleted bundle);
// deleting the last one ends the shim and removes its socket.
func TestGroupingSharesOneShim(t *testing.T) {
	forEachFlavor(t, func(t *testing.T, d *harness.Daemon) {
		ctx, ns := d.NewNamespace(t)
		ctx, cancel := context.WithTimeout(ctx, 90*time.Second)
		defer cancel()
		g1, g2 := "pod-"+harness.RandID(8), "grp-"+harness.RandID(8)
		own := ownGroupAnnotation()

		// c1, c2: CRI sandbox id g1. c3: own group g2. c4: own group g2 and sandbox id g1
		// (own group first, so it joins c3).
		runs := []struct{ id, ann string }{
			{"c1", sandboxAnnotation + "=" + g1},
			{"c2", sandboxAnnotation + "=" + g1},
			{"c3", own + "=" + g2},
			{"c4", own + "=" + g2 + "," + sandboxAnnotation + "=" + g1},
		}
		for _, r := range runs {
			args := []string{"-d"}
			for _, a := range strings.Split(r.ann, ",") {
				args = append(args, "--annotation", a)
			}
			args = append(args, harness.ImageName, r.id)
			ctrOK(t, ctx, d, ctrRun(d, append(args, loopArgs...)...)...)
			waitTaskStatus(t, ctx, d, r.id, "RUNNING", 10*time.Second)
		}

		addr := map[string]string{}
		for _, r := range runs {
			addr[r.id] = readAddressFile(t, d, ns, r.id)
		}
		if addr["c1"] != addr["c2"] {
			t.Errorf("same sandbox id: address files differ: c1 %q, c2 %q", addr["c1"], addr["c2"])
		}
		if addr["c3"] != addr["c4"] {
			t.Errorf("same %s: address files differ: c3 %q, c4 %q (c4 also carries the sandbox id of c1; the own group must win)", own, addr["c3"], addr["c4"])
		}
		if addr["c1"] == addr["c3"] {
			t.Errorf("different groups share the address %q", addr["c1"])
		}
		shims := d.ShimProcesses(ns, "")
		if len(shims) != 2 {
			t.Fatalf("4 containers in 2 groups: %d shim processes, want 2: %v", len(shims), shims)
		}
		shim1, shim2 := onlyShim(t, d, ns, "c1"), onlyShim(t, d, ns, "c3")
		sock1, sock2 := socketOf(t, addr["c1"]), socketOf(t, addr["c3"])
		for _, s := range []string{sock1, sock2} {
			if _, err := os.Stat(s); err != nil {
				t.Errorf("shim socket %s: %v", s, err)
			}
		}

		c := d.Client()
		remove := func(id string) {
			t.Helper()
			ctr, err := c.LoadContainer(ctx, id)
			if err != nil {
				t.Fatalf("load %s: %v", id, err)
			}
			if err := harness.DeleteContainer(ctx, ctr); err != nil {
				t.Fatalf("delete %s: %v", id, err)
			}
		}

		// The group's first container goes: the shim (whose cwd was c1's bundle) stays and
		// still serves c2.
		remove("c1")
		time.Sleep(500 * time.Millisecond) // a wrong Shutdown would take effect by now
		if !harness.PidExists(shim1.Pid) {
			t.Fatalf("shim %d of group %s exited when c1 was deleted while c2 still runs", shim1.Pid, g1)
		}
		if row := ctrTaskList(t, ctx, d)["c2"]; row.Status != "RUNNING" {
			t.Errorf("c2 after c1 was deleted: status %q, want RUNNING", row.Status)
		}
		if _, err := os.Stat(sock1); err != nil {
			t.Errorf("socket of group %s gone while c2 still runs: %v", g1, err)
		}
		out, stderr, code, err := d.Ctr(ctx, "task", "exec", "--fifo-dir", d.FIFODir, "--exec-id", "e1", "c2", "sh", "-c", "echo alive")
		if err != nil || code != 0 || out != "alive\n" {
			t.Errorf("exec in c2 after c1 was deleted: out %q code %d err %v stderr %q", out, code, err, stderr)
		}
		if _, err := os.Stat(d.BundleDir(ns, "c1")); !os.IsNotExist(err) {
			t.Errorf("bundle of deleted c1 still there (%v)", err)
		}

		// The last container of g1 goes: its shim exits and removes its socket; g2's stays.
		remove("c2")
		waitFor(t, 5*time.Second, "shim of group "+g1+" exits after its last container", func() bool {
			return !harness.PidExists(shim1.Pid)
		})
		waitFor(t, 5*time.Second, "socket "+sock1+" removed", func() bool {
			_, err := os.Lstat(sock1)
			return os.IsNotExist(err)
		})
		if !harness.PidExists(shim2.Pid) {
			t.Fatalf("shim %d of group %s exited with group %s", shim2.Pid, g2, g1)
		}
		expectGroupTasks(t, ctx, c, "c3", "c4")

		remove("c3")
		time.Sleep(300 * time.Millisecond)
		if !harness.PidExists(shim2.Pid) {
			t.Fatalf("shim %d of group %s exited when c3 was deleted while c4 still runs", shim2.Pid, g2)
		}
		remove("c4")
		waitFor(t, 5*time.Second, "shim of group "+g2+" exits after its last container", func() bool {
			return !harness.PidExists(shim2.Pid)
		})
		waitFor(t, 5*time.Second, "socket "+sock2+" removed", func() bool {
			_, err := os.Lstat(sock2)
			return os.IsNotExist(err)
		})
		for _, r := range runs {
			expectNoLeftovers(t, d, ns, r.id)
		}
	})
}

// readAddressFile returns the content of the task's bundle/address file. The stock shim
// under 2.x writes none (containerd keeps the address in bootstrap.json); only for it is
// bootstrap.json's address used instead.
func readAddressFile(t *testing.T, d *harness.Daemon, ns, id string) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(d.BundleDir(ns, id), "address"))
	if err != nil && os.IsNotExist(err) && stockRunc2x(d) {
		var b struct {
			Address string `json:"address"`
		}
		raw, berr := os.ReadFile(filepath.Join(d.BundleDir(ns, id), "bootstrap.json"))
		if berr == nil && json.Unmarshal(raw, &b) == nil && b.Address != "" {
			return b.Address
		}
	}
	if err != nil {
		t.Fatalf("address file of %s: %v", id, err)
	}
	return string(data)
}

// socketOf turns a unix:// address into the socket path.
func socketOf(t *testing.T, addr string) string {
	t.Helper()
	p, ok := strings.CutPrefix(addr, "unix://")
	if !ok {
		t.Fatalf("shim address %q is not unix://", addr)
	}
	return p
}

// onlyShim returns the one shim process started with -id id.
func onlyShim(t *testing.T, d *harness.Daemon, ns, id string) harness.Proc {
	t.Helper()
	procs := d.ShimProcesses(ns, id)
	if len(procs) != 1 {
		t.Fatalf("shim processes with -id %s: %v, want exactly one", id, procs)
	}
	return procs[0]
}

// expectGroupTasks fails the test unless the tasks are running.
func expectGroupTasks(t *testing.T, ctx context.Context, c *containerd.Client, ids ...string) {
	t.Helper()
	for _, id := range ids {
		ctr, err := c.LoadContainer(ctx, id)
		if err != nil {
			t.Errorf("load %s: %v", id, err)
			continue
		}
		task, err := ctr.Task(ctx, nil)
		if err != nil {
			t.Errorf("task %s: %v", id, err)
			continue
		}
		expectRunning(t, ctx, task, "while its group's other shim went away")
	}
}

// The stock shim's grouping annotation groups our containers too, so a workload moved from
// io.containerd.runc.v2 keeps one shim per group. A group by that annotation is the stock
// shim's as well: a stock container carrying it started first must keep its own daemon, and
// ours must not join it (the stock shim names the socket after the hash of the group, and a
// shim that hashed the same way would hand our containers to runc-v2).
func TestGroupingByTheStockShimsAnnotation(t *testing.T) {
	if harness.Runtime() == "io.containerd.runc.v2" {
		t.Skip("the runtime under test is the stock shim: nothing of another runtime to keep apart")
	}
	forEachFlavor(t, func(t *testing.T, d *harness.Daemon) {
		ctx, ns := d.NewNamespace(t)
		ctx, cancel := context.WithTimeout(ctx, 90*time.Second)
		defer cancel()
		g := "grp-" + harness.RandID(8)
		ann := "io.containerd.runc.v2.group=" + g
		ctrOK(t, ctx, d, append([]string{"run", "--fifo-dir", d.FIFODir, "--runtime", "io.containerd.runc.v2",
			"-d", "--annotation", ann, harness.ImageName, "s1"}, loopArgs...)...)
		waitTaskStatus(t, ctx, d, "s1", "RUNNING", 10*time.Second)
		for _, id := range []string{"c1", "c2"} {
			ctrOK(t, ctx, d, ctrRun(d, append([]string{"-d", "--annotation", ann, harness.ImageName, id}, loopArgs...)...)...)
			waitTaskStatus(t, ctx, d, id, "RUNNING", 10*time.Second)
		}

		if a1, a2 := readAddressFile(t, d, ns, "c1"), readAddressFile(t, d, ns, "c2"); a1 != a2 {
			t.Errorf("same %s: address files differ: c1 %q, c2 %q", ann, a1, a2)
		} else if stockSocket := d.ShimSocketPath(ns, g); socketOf(t, a1) == stockSocket {
			t.Errorf("c1 and c2 are served on the stock shim's socket for the group, %s", stockSocket)
		}
		ours := onlyShim(t, d, ns, "c1")
		if base := filepath.Base(ours.Args[0]); base != harness.RuntimeBinaryName(harness.Runtime()) {
			t.Errorf("c1 is served by %s, want this shim", ours)
		}
		if procs := d.ShimProcesses(ns, "c2"); len(procs) != 0 {
			t.Errorf("c2 has a shim of its own: %v", procs)
		}
		stock := onlyShim(t, d, ns, "s1")
		if base := filepath.Base(stock.Args[0]); base != "containerd-shim-runc-v2" {
			t.Errorf("s1 is served by %s, want the stock shim", stock)
		}
		expectExecAlive(t, ctx, d, "c1", "c2", "s1")

		// Our group's last container gone, its daemon leaves with its socket; the stock
		// shim's daemon is not disturbed.
		sock := socketOf(t, readAddressFile(t, d, ns, "c1"))
		deleteContainers(t, ctx, d, "c1", "c2")
		waitFor(t, 5*time.Second, "our group's shim exits after its last container", func() bool {
			return !harness.PidExists(ours.Pid)
		})
		waitFor(t, 5*time.Second, "socket "+sock+" removed", func() bool {
			_, err := os.Lstat(sock)
			return os.IsNotExist(err)
		})
		if !harness.PidExists(stock.Pid) {
			t.Errorf("the stock shim of s1 (%s) exited with our group", stock)
		}
		expectGroupTasks(t, ctx, d.Client(), "s1")
		for _, id := range []string{"c1", "c2"} {
			expectNoLeftovers(t, d, ns, id)
		}
	})
}

// A task of ours whose id is the name of a stock shim's group hashes to that group's socket
// (both shims name a daemon's socket after the hash of its group or task id). Joining the
// daemon found there would have the stock shim run our container. `start` sees that the daemon
// is not of this shim and starts one of ours on a marked socket; a container of our own group
// of the same name joins that one, not the stock daemon.
func TestTaskNamedAfterAStockGroupGetsThisShim(t *testing.T) {
	if harness.Runtime() == "io.containerd.runc.v2" {
		t.Skip("the runtime under test is the stock shim: nothing of another runtime to keep apart")
	}
	forEachFlavor(t, func(t *testing.T, d *harness.Daemon) {
		ctx, ns := d.NewNamespace(t)
		ctx, cancel := context.WithTimeout(ctx, 90*time.Second)
		defer cancel()
		g := "grp-" + harness.RandID(8)
		ctrOK(t, ctx, d, append([]string{"run", "--fifo-dir", d.FIFODir, "--runtime", "io.containerd.runc.v2",
			"-d", "--annotation", "io.containerd.runc.v2.group=" + g, harness.ImageName, "s1"}, loopArgs...)...)
		waitTaskStatus(t, ctx, d, "s1", "RUNNING", 10*time.Second)
		ctrOK(t, ctx, d, ctrRun(d, append([]string{"-d", harness.ImageName, g}, loopArgs...)...)...)
		waitTaskStatus(t, ctx, d, g, "RUNNING", 10*time.Second)
		ctrOK(t, ctx, d, ctrRun(d, append([]string{"-d", "--annotation", ownGroupAnnotation() + "=" + g,
			harness.ImageName, "c2"}, loopArgs...)...)...)
		waitTaskStatus(t, ctx, d, "c2", "RUNNING", 10*time.Second)

		stock := onlyShim(t, d, ns, "s1")
		ours := onlyShim(t, d, ns, g)
		if base := filepath.Base(ours.Args[0]); base != harness.RuntimeBinaryName(harness.Runtime()) {
			t.Errorf("%s is served by %s, want this shim", g, ours)
		}
		if procs := d.ShimProcesses(ns, "c2"); len(procs) != 0 {
			t.Errorf("c2 has a shim of its own: %v", procs)
		}
		addr := readAddressFile(t, d, ns, g)
		if a2 := readAddressFile(t, d, ns, "c2"); a2 != addr {
			t.Errorf("%s and c2, one group of ours: address files differ: %q, %q", g, addr, a2)
		}
		if stockSocket := d.ShimSocketPath(ns, g); socketOf(t, addr) == stockSocket {
			t.Errorf("%s is served on the stock shim's socket for its group, %s", g, stockSocket)
		}
		expectExecAlive(t, ctx, d, g, "c2", "s1")

		deleteContainers(t, ctx, d, g, "c2")
		waitFor(t, 5*time.Second, "our shim exits after its last container", func() bool {
			return !harness.PidExists(ours.Pid)
		})
		if !harness.PidExists(stock.Pid) {
			t.Errorf("the stock shim of s1 (%s) exited with our containers", stock)
		}
		waitFor(t, 5*time.Second, "our socket "+socketOf(t, addr)+" removed", func() bool {
			_, err := os.Lstat(socketOf(t, addr))
			return os.IsNotExist(err)
		})
		expectGroupTasks(t, ctx, d.Client(), "s1")

		// The stock shim's socket for the group carries the name of our task: leftovers
		// are counted once s1 is gone too.
		deleteContainers(t, ctx, d, "s1")
		waitFor(t, 5*time.Second, "the stock shim exits after s1", func() bool {
			return !harness.PidExists(stock.Pid)
		})
		if d.Is2x() {
			// The 2.x stock shim removes its socket after the `address` file of its
			// first bundle, which under 2.x it does not write (bootstrap.json instead):
			// its sockets stay behind, dead. Not ours to count.
			for _, p := range []string{d.ShimSocketPath(ns, g), d.ShimDebugSocketPath(ns, g)} {
				if err := os.Remove(p); err != nil && !os.IsNotExist(err) {
					t.Errorf("remove the stock shim's stale socket %s: %v", p, err)
				}
			}
		}
		for _, id := range []string{g, "c2", "s1"} {
			expectNoLeftovers(t, d, ns, id)
		}
	})
}

// deleteContainers deletes each container with its task, failing the test at the first error.
func deleteContainers(t *testing.T, ctx context.Context, d *harness.Daemon, ids ...string) {
	t.Helper()
	for _, id := range ids {
		ctr, err := d.Client().LoadContainer(ctx, id)
		if err != nil {
			t.Fatalf("load %s: %v", id, err)
		}
		if err := harness.DeleteContainer(ctx, ctr); err != nil {
			t.Fatalf("delete %s: %v", id, err)
		}
	}
}

// expectExecAlive runs `echo alive` in each task through ctr, which checks that the task's shim
// serves it.
func expectExecAlive(t *testing.T, ctx context.Context, d *harness.Daemon, ids ...string) {
	t.Helper()
	for _, id := range ids {
		out, stderr, code, err := d.Ctr(ctx, "task", "exec", "--fifo-dir", d.FIFODir, "--exec-id", "e-"+id, id, "sh", "-c", "echo alive")
		if err != nil || code != 0 || out != "alive\n" {
			t.Errorf("exec in %s: out %q code %d err %v stderr %q", id, out, code, err, stderr)
		}
	}
}
