package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/containerd/containerd/v2/core/mount"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// The runtime floor: the OCI runtime alone, called the way both shims call
// it, on a bundle made from the same image and spec, without containerd or a
// shim. Measured by this binary re-executed (-floor-request): it must mount
// the rootfs and run the runtime in the daemon's mount namespace, which for
// a crun lane is a private one (nsenter).

// floorRequest describes one floor measurement.
type floorRequest struct {
	Runtime    string        // OCI runtime binary
	Root       string        // its --root
	Rootfs     string        // where to mount the image's snapshot
	Mounts     []mount.Mount // the snapshot's mounts
	Bundle     string        // config.json running `true`
	Sleeper    string        // config.json running `sleep`, same rootfs
	ID         string        // container id prefix
	Iterations int
}

// Floor rows (keys); the helper returns samples under these.
const (
	floorRun      = "floor-run"
	floorCreate   = "floor-create"
	floorStart    = "floor-start"
	floorDelete   = "floor-delete"
	floorCSD      = "floor-create-start-delete"
	floorExecD    = "floor-exec-detached"
	floorExecFore = "floor-exec"
)

func (b *bench) runtimeFloor() error {
	rtPath := lookPath(runtimeBinary(b.lane), b.d.PATH)
	if rtPath == "" {
		return fmt.Errorf("%s not on the daemon's PATH", runtimeBinary(b.lane))
	}
	id := b.id("floor")
	c, err := b.container(runtimeB, id, []string{"true"})
	if err != nil {
		return err
	}
	defer b.remove(c)
	spec, err := c.Spec(b.ctx)
	if err != nil {
		return err
	}
	mounts, err := b.client.SnapshotService("overlayfs").Mounts(b.ctx, id+"-snap")
	if err != nil {
		return err
	}
	dir := filepath.Join(b.d.Base, "floor", id)
	req := floorRequest{
		Runtime: rtPath, Root: filepath.Join(dir, "state"), Rootfs: filepath.Join(dir, "rootfs"),
		Mounts: mounts, Bundle: filepath.Join(dir, "true"), Sleeper: filepath.Join(dir, "sleep"),
		ID: b.ns + "-" + id, Iterations: b.cfg.iterations,
	}
	defer os.RemoveAll(dir)
	for _, d := range []string{req.Root, req.Rootfs, req.Bundle, req.Sleeper} {
		if err := os.MkdirAll(d, 0o711); err != nil {
			return err
		}
	}
	spec.Root = &specs.Root{Path: req.Rootfs}
	spec.Process.Terminal = false
	for bundle, args := range map[string][]string{req.Bundle: {"true"}, req.Sleeper: {"sleep", "100000"}} {
		spec.Process.Args = args
		data, err := json.Marshal(spec)
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(bundle, "config.json"), data, 0o600); err != nil {
			return err
		}
	}
	reqFile := filepath.Join(dir, "request.json")
	data, _ := json.Marshal(req)
	if err := os.WriteFile(reqFile, data, 0o600); err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	cmd := exec.Command(self, "-floor-request", reqFile)
	if b.lane.binary != "" {
		// The lane's daemon (and so its shims and runtime) live in their own mount namespace.
		cmd = exec.Command("nsenter", "-t", strconv.Itoa(b.d.Pid()), "-m", "--", self, "-floor-request", reqFile)
	}
	var out, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("floor helper: %v: %s", err, stderr.String())
	}
	var got map[string][]float64
	if err := json.Unmarshal(out.Bytes(), &got); err != nil {
		return fmt.Errorf("floor helper output: %v", err)
	}
	rt := runtimeBinary(b.lane)
	for _, r := range []struct{ key, name string }{
		{floorRun, "floor: `" + rt + " run` of `true` (no shim, no containerd)"},
		{floorCreate, "floor: `" + rt + " create`"},
		{floorStart, "floor: `" + rt + " start`"},
		{floorDelete, "floor: `" + rt + " delete`"},
		{floorCSD, "floor: create + start + delete (the shims' three runtime calls)"},
		{floorExecD, "floor: `" + rt + " exec --detach` of `true` + its exit (as the shims call it)"},
		{floorExecFore, "floor: `" + rt + " exec` of `true` (foreground)"},
	} {
		s := b.newSample(r.key, r.name, "ms", true)
		s.floor, s.a = true, got[r.key]
	}
	return nil
}

// runFloorRequest is the helper side: it measures and prints JSON.
func runFloorRequest(path string, w io.Writer) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var req floorRequest
	if err := json.Unmarshal(data, &req); err != nil {
		return err
	}
	// Detached containers and execs are re-parented to the nearest subreaper:
	// this process, which then reaps them.
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		return err
	}
	if err := mount.All(req.Mounts, req.Rootfs); err != nil {
		return fmt.Errorf("mount rootfs: %w", err)
	}
	defer mount.UnmountAll(req.Rootfs, 0)
	// The runtime's stderr is a file, not a pipe: a detached container
	// inherits it, and a pipe would keep cmd.Run waiting for its end.
	errLog, err := os.CreateTemp(req.Root, "stderr")
	if err != nil {
		return err
	}
	defer errLog.Close()
	rt := func(args ...string) (time.Duration, error) {
		cmd := exec.Command(req.Runtime, append([]string{"--root", req.Root}, args...)...)
		_ = errLog.Truncate(0)
		cmd.Stderr = errLog
		t0 := time.Now()
		err := cmd.Run()
		el := time.Since(t0)
		if err != nil {
			msg, _ := os.ReadFile(errLog.Name())
			return 0, fmt.Errorf("%s %s: %v: %s", filepath.Base(req.Runtime), strings.Join(args, " "), err, msg)
		}
		return el, nil
	}
	out := map[string][]float64{}
	add := func(k string, d time.Duration) { out[k] = append(out[k], ms(d)) }
	pidFile := filepath.Join(req.Root, "pid")
	for i := 0; i < req.Iterations; i++ {
		id := fmt.Sprintf("%s-run-%d", req.ID, i)
		d, err := rt("run", "--bundle", req.Bundle, id)
		if err != nil {
			return err
		}
		add(floorRun, d)

		id = fmt.Sprintf("%s-csd-%d", req.ID, i)
		dc, err := rt("create", "--bundle", req.Bundle, "--pid-file", pidFile, id)
		if err != nil {
			return err
		}
		pid, err := readPid(pidFile)
		if err != nil {
			return err
		}
		ds, err := rt("start", id)
		if err != nil {
			return err
		}
		waitExit(pid)
		dd, err := rt("delete", id)
		if err != nil {
			return err
		}
		add(floorCreate, dc)
		add(floorStart, ds)
		add(floorDelete, dd)
		add(floorCSD, dc+ds+dd)
	}

	sleeper := req.ID + "-sleep"
	if _, err := rt("create", "--bundle", req.Sleeper, "--pid-file", pidFile, sleeper); err != nil {
		return err
	}
	initPid, err := readPid(pidFile)
	if err != nil {
		return err
	}
	defer func() {
		_, _ = rt("kill", sleeper, "KILL")
		waitExit(initPid)
		_, _ = rt("delete", "--force", sleeper)
	}()
	if _, err := rt("start", sleeper); err != nil {
		return err
	}
	for i := 0; i < req.Iterations*2; i++ {
		t0 := time.Now()
		if _, err := rt("exec", "--detach", "--pid-file", pidFile, sleeper, "true"); err != nil {
			return err
		}
		pid, err := readPid(pidFile)
		if err != nil {
			return err
		}
		waitExit(pid)
		add(floorExecD, time.Since(t0))
		d, err := rt("exec", sleeper, "true")
		if err != nil {
			return err
		}
		add(floorExecFore, d)
	}
	return json.NewEncoder(w).Encode(out)
}

func readPid(path string) (int, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(strings.TrimSpace(string(data)))
}

// waitExit waits until pid has exited (through a pidfd: it need not be our
// child) and reaps it if it was re-parented to us.
func waitExit(pid int) {
	fd, err := unix.PidfdOpen(pid, 0)
	if err == nil {
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		for {
			if _, err := unix.Poll(fds, 10_000); err != unix.EINTR {
				break
			}
		}
		unix.Close(fd)
	}
	var ws unix.WaitStatus
	_, _ = unix.Wait4(pid, &ws, unix.WNOHANG, nil)
}

// lookPath finds an executable on a PATH list.
func lookPath(name, pathList string) string {
	for _, dir := range filepath.SplitList(pathList) {
		p := filepath.Join(dir, name)
		if st, err := os.Stat(p); err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
			return p
		}
	}
	return ""
}

// binaryVersion is the first line of `<binary> --version`.
func binaryVersion(binary string) string {
	out, err := exec.Command(binary, "--version").Output()
	if err != nil {
		return binary + " ?"
	}
	return strings.SplitN(string(out), "\n", 2)[0]
}
