package integration

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	taskv2 "github.com/containerd/containerd/api/runtime/task/v2"
	taskv3 "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/containerd/api/types"
	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/containerd/ttrpc"
	"github.com/containerd/typeurl/v2"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/example/containerd-shim-example-v2/integration/harness"
)

// directCallTimeout bounds every call made straight to the shim: a bad request must be
// answered, not hang.
const directCallTimeout = 10 * time.Second

// Errdefs classes a bad request may be answered with (names as errCode gives them).
var (
	invalid      = []string{"InvalidArgument"}
	notFound     = []string{"NotFound"}
	missing      = []string{"NotFound", "InvalidArgument"} // a path that does not exist
	notThisTask  = []string{"NotFound", "InvalidArgument"} // an id no task can have
	wrongState   = []string{"FailedPrecondition"}
	alreadyThere = []string{"AlreadyExists"}
	unsupported  = []string{"InvalidArgument", "NotImplemented"} // a URI scheme the shim has no use for
)

// Security/robustness 6: bad input straight to the shim over ttrpc (the socket named by a
// task's address file, the task v2 client; once the v3 service). Every request below is
// answered with the expected errdefs class, within directCallTimeout; afterwards the shim is
// alive and serving (Connect on v2 and v3 gives its PID), its tasks are untouched, and
// nothing of the rejected requests is left (no runc state, mount, file in a foreign bundle).
func TestBadInputStraightToShim(t *testing.T) {
	forEachFlavor(t, func(t *testing.T, d *harness.Daemon) {
		ctx, ns := d.NewNamespace(t)
		ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		defer cancel()
		group := "bad-" + harness.RandID(8)

		live := newContainer(t, ctx, d, "bi-live", []string{"sleep", "1000000"}, groupAnnotation(group))
		liveTask, _ := startTask(t, ctx, live, cio.NullIO)
		stopped := newContainer(t, ctx, d, "bi-stopped", []string{"sh", "-c", "exit 3"}, groupAnnotation(group))
		_, stoppedWait := startTask(t, ctx, stopped, cio.NullIO)
		if code := exitCode(t, ctx, stoppedWait); code != 3 {
			t.Fatalf("bi-stopped: exit code %d, want 3", code)
		}
		shimPid := shimPidFor(t, d, ns, "bi-live", "bi-live")
		socket := socketOf(t, readAddressFile(t, d, ns, "bi-live"))
		s := dialShim(t, ctx, d, ns, socket, group)
		tried := 0
		expect := func(what string, err error, classes []string) {
			t.Helper()
			tried++
			err = errgrpc.ToNative(err)
			if !slices.Contains(classes, errCode(err)) {
				t.Errorf("%s: %v (%s), want %s", what, err, errCode(err), strings.Join(classes, " or "))
			}
			if !harness.PidExists(shimPid) {
				t.Fatalf("shim %d died after: %s", shimPid, what)
			}
		}
		liveBundle := d.BundleDir(ns, "bi-live")

		// Ids: empty, with / or .., too long; ids no task has.
		for _, id := range []string{"", "a/b", "..", "../escape", ".hidden", "x/../../y", strings.Repeat("a", 77)} {
			req := &taskv2.CreateTaskRequest{ID: id, Bundle: filepath.Join(filepath.Dir(liveBundle), id)}
			_, err := s.v2.Create(s.call(), req)
			expect(fmt.Sprintf("Create with id %q", id), err, invalid)
		}
		for _, id := range []string{"", "nosuch", "../bi-live", "bi-live/..", "bi-live/../bi-live"} {
			_, err := s.v2.State(s.call(), &taskv2.StateRequest{ID: id})
			expect(fmt.Sprintf("State of id %q", id), err, notThisTask)
		}
		_, err := s.v2.Kill(s.call(), &taskv2.KillRequest{ID: "nosuch", Signal: uint32(syscall.SIGKILL)})
		expect("Kill of unknown id", err, notFound)
		_, err = s.v2.Start(s.call(), &taskv2.StartRequest{ID: "nosuch"})
		expect("Start of unknown id", err, notFound)
		_, err = s.v2.Delete(s.call(), &taskv2.DeleteRequest{ID: "nosuch"})
		expect("Delete of unknown id", err, notFound)
		_, err = s.v2.Pids(s.call(), &taskv2.PidsRequest{ID: "nosuch"})
		expect("Pids of unknown id", err, notFound)
		_, err = s.v2.Wait(s.call(), &taskv2.WaitRequest{ID: "nosuch"})
		expect("Wait of unknown id", err, notFound)
		_, err = s.v2.State(s.call(), &taskv2.StateRequest{ID: "bi-live", ExecID: "nosuch"})
		expect("State of unknown exec id", err, notFound)
		for _, execID := range []string{"", "../x", "a/b", "..", strings.Repeat("e", 77)} {
			_, err := s.v2.Exec(s.call(), &taskv2.ExecProcessRequest{ID: "bi-live", ExecID: execID, Spec: s.processSpec("true")})
			expect(fmt.Sprintf("Exec with exec id %q", execID), err, invalid)
		}

		// Bundles: relative, not clean, another task's, another namespace's (absent), missing,
		// with a malformed config.json. A bundle outside containerd's state dir is no bad
		// input: callers other than containerd keep bundles anywhere (as the stock shim
		// allows); it must work, and be cleaned up by Delete.
		// (A config.json of its own: a copy of bi-live's would share bi-live's cgroup.)
		req := s.validRequest("bi-out")
		outside := filepath.Join(t.TempDir(), "bundle-elsewhere")
		if err := os.MkdirAll(filepath.Join(outside, "rootfs"), 0o711); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(outside, "config.json"), []byte(readFile(filepath.Join(req.Bundle, "config.json"))), 0o600); err != nil {
			t.Fatal(err)
		}
		req.Bundle = outside
		if _, err := s.v2.Create(s.call(), req); err != nil {
			t.Errorf("Create with a bundle outside the state dir (%s): %v", outside, err)
		} else {
			s.v2.Kill(s.call(), &taskv2.KillRequest{ID: "bi-out", Signal: uint32(syscall.SIGKILL), All: true})
			if _, err := s.v2.Delete(s.call(), &taskv2.DeleteRequest{ID: "bi-out"}); err != nil {
				t.Errorf("Delete of the task in %s: %v", outside, err)
			}
		}
		s.noTrace("bi-out", req.Bundle)

		for what, c := range map[string]struct {
			bundle  string
			classes []string
		}{
			"relative":            {filepath.Join(ns, "bi-rel"), invalid},
			"not clean":           {filepath.Dir(liveBundle) + "/x/../bi-rel", invalid},
			"another task's":      {liveBundle, invalid},
			"another namespace's": {filepath.Join(d.State, "io.containerd.runtime.v2.task", "other-"+ns, "bi-rel"), missing},
		} {
			req := s.validRequest("bi-rel")
			req.Bundle = c.bundle
			_, err := s.v2.Create(s.call(), req)
			expect(fmt.Sprintf("Create with the bundle %q (%s)", c.bundle, what), err, c.classes)
			s.deleteIfCreated("bi-rel")
			s.noTrace("bi-rel", "")
		}
		expectRunning(t, ctx, liveTask, "after Creates naming its bundle")

		req = s.validRequest("bi-nobundle")
		os.RemoveAll(req.Bundle)
		_, err = s.v2.Create(s.call(), req)
		expect("Create with a missing bundle", err, missing)
		s.deleteIfCreated("bi-nobundle")
		s.noTrace("bi-nobundle", req.Bundle)

		req = s.validRequest("bi-badjson")
		if err := os.WriteFile(filepath.Join(req.Bundle, "config.json"), []byte(`{"ociVersion": "1.0.2", "process": {`), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err = s.v2.Create(s.call(), req)
		expect("Create with a malformed config.json", err, invalid)
		s.deleteIfCreated("bi-badjson")
		s.noTrace("bi-badjson", req.Bundle)

		_, err = s.v2.Create(s.call(), &taskv2.CreateTaskRequest{ID: "bi-live", Bundle: liveBundle})
		expect("Create of the running task's id", err, alreadyThere)

		// Stdio and log URIs.
		fileLog := filepath.Join(t.TempDir(), "never", "log")
		for _, c := range []struct {
			what          string
			in, out, errs string
			classes       []string
		}{
			{"nonexistent stdout/stderr FIFOs", "", "/nonexistent/dir/stdout", "/nonexistent/dir/stderr", missing},
			{"nonexistent stdin FIFO", "/nonexistent/dir/stdin", "", "", missing},
			{"relative stdout path", "", "relative/stdout", "relative/stderr", invalid},
			{"tcp:// log URI", "", "tcp://x", "tcp://x", unsupported},
			{"binary:// with a relative path", "", "binary://relative", "binary://relative", invalid},
			{"binary:// without a path", "", "binary://", "binary://", invalid},
			// file://relative/<abs> has the host "relative": not a local file URI.
			{"file:// with a host part", "", "file://relative" + fileLog, "file://relative" + fileLog, invalid},
			{"file:// with an unknown option", "", "file://" + fileLog + "?bogus=1", "file://" + fileLog + "?bogus=1", invalid},
			{"file:// with a bad format", "", "file://" + fileLog + "?format=json", "file://" + fileLog + "?format=json", invalid},
			{"file:// with a bad max-size", "", "file://" + fileLog + "?max-size=lots", "file://" + fileLog + "?max-size=lots", invalid},
		} {
			req := s.validRequest("bi-stdio")
			req.Stdin, req.Stdout, req.Stderr = c.in, c.out, c.errs
			_, err := s.v2.Create(s.call(), req)
			expect("Create with "+c.what, err, c.classes)
			s.deleteIfCreated("bi-stdio")
			s.noTrace("bi-stdio", req.Bundle)
		}
		if _, err := os.Stat(filepath.Dir(fileLog)); !os.IsNotExist(err) {
			t.Errorf("rejected file:// log URIs created %s (%v)", filepath.Dir(fileLog), err)
		}

		// Options: an unknown type URL is accepted (and ignored); a known type that does
		// not decode is not.
		req = s.validRequest("bi-opts")
		req.Options = &anypb.Any{TypeUrl: "example.com/unknown.v1.Options", Value: []byte{0x0a, 0x03, 'a', 'b', 'c', 0xff}}
		_, err = s.v2.Create(s.call(), req)
		tried++
		if err != nil {
			t.Errorf("Create with options of an unknown type URL: %v (%s), want it accepted", err, errCode(errgrpc.ToNative(err)))
		} else if _, err := s.v2.Delete(s.call(), &taskv2.DeleteRequest{ID: "bi-opts"}); err != nil {
			t.Errorf("Delete of the created bi-opts: %v", err)
		}
		s.noTrace("bi-opts", req.Bundle)
		req = s.validRequest("bi-opts2")
		req.Options = &anypb.Any{TypeUrl: "containerd.runc.v1.Options", Value: []byte{0xff, 0xff, 0xff}}
		_, err = s.v2.Create(s.call(), req)
		expect("Create with undecodable containerd.runc.v1.Options", err, invalid)
		s.deleteIfCreated("bi-opts2")
		s.noTrace("bi-opts2", req.Bundle)

		// Calls in the wrong state.
		_, err = s.v2.Start(s.call(), &taskv2.StartRequest{ID: "bi-live"})
		expect("Start of the running init (Start twice)", err, wrongState)
		_, err = s.v2.Delete(s.call(), &taskv2.DeleteRequest{ID: "bi-live"})
		expect("Delete of the running init", err, wrongState)
		_, err = s.v2.Exec(s.call(), &taskv2.ExecProcessRequest{ID: "bi-stopped", ExecID: "late", Spec: s.processSpec("true")})
		expect("Exec in the stopped task", err, wrongState)
		_, err = s.v2.Start(s.call(), &taskv2.StartRequest{ID: "bi-stopped"})
		expect("Start of the stopped init", err, wrongState)
		if _, err := s.v2.Exec(s.call(), &taskv2.ExecProcessRequest{ID: "bi-live", ExecID: "never", Spec: s.processSpec("true")}); err != nil {
			t.Fatalf("Exec (added, not started): %v", err)
		}
		_, err = s.v2.Exec(s.call(), &taskv2.ExecProcessRequest{ID: "bi-live", ExecID: "never", Spec: s.processSpec("true")})
		expect("Exec with the id of an existing exec", err, alreadyThere)
		_, err = s.v2.Kill(s.call(), &taskv2.KillRequest{ID: "bi-live", ExecID: "never", Signal: uint32(syscall.SIGKILL)})
		expect("Kill of an exec never started", err, wrongState)
		if _, err := s.v2.Delete(s.call(), &taskv2.DeleteRequest{ID: "bi-live", ExecID: "never"}); err != nil {
			t.Errorf("Delete of the exec never started: %v", err)
		}
		expectRunning(t, ctx, liveTask, "after the wrong-state calls")

		// Transport: a frame over ttrpc's 4 MiB limit, a request that does not decode, a
		// method that does not exist, a big (under the limit) request.
		code, msg := s.rawFrame(5<<20, 1)
		tried++
		if code != codes.ResourceExhausted {
			t.Errorf("5 MiB frame: answered %v %q, want ResourceExhausted", code, msg)
		}
		code, msg = s.rawFrame(64, 1)
		tried++
		if code != codes.InvalidArgument {
			t.Errorf("undecodable request: answered %v %q, want InvalidArgument", code, msg)
		}
		err = s.ttrpc.Call(s.call(), "containerd.task.v2.Task", "NoSuchMethod", &taskv2.StateRequest{ID: "bi-live"}, &taskv2.StateResponse{})
		expect("unknown method", err, []string{"NotImplemented"})
		err = s.ttrpc.Call(s.call(), "containerd.task.v9.Task", "State", &taskv2.StateRequest{ID: "bi-live"}, &taskv2.StateResponse{})
		expect("unknown service", err, []string{"NotImplemented"})
		_, err = s.v2.Create(s.call(), &taskv2.CreateTaskRequest{ID: strings.Repeat("x", 3<<20), Bundle: liveBundle})
		expect("Create with a 3 MiB id", err, invalid)

		// Nothing of the refused requests in the runtime's state or the namespace's bundles.
		for _, dir := range []string{filepath.Join(harness.RuncRoot, ns), filepath.Dir(liveBundle)} {
			entries, _ := os.ReadDir(dir)
			for _, e := range entries {
				if e.Name() != "bi-live" && e.Name() != "bi-stopped" {
					t.Errorf("left in %s: %s", dir, e.Name())
				}
			}
		}

		// Still alive and serving, on both service names, and the tasks are untouched.
		resp, err := s.v2.Connect(s.call(), &taskv2.ConnectRequest{ID: "bi-live"})
		if err != nil || int(resp.GetShimPid()) != shimPid || resp.GetTaskPid() != liveTask.Pid() {
			t.Errorf("v2 Connect after the bad input: %v (err %v), want shim pid %d task pid %d", resp, err, shimPid, liveTask.Pid())
		}
		v3resp, err := taskv3.NewTTRPCTaskClient(s.ttrpc).Connect(s.call(), &taskv3.ConnectRequest{ID: "bi-live"})
		if err != nil || int(v3resp.GetShimPid()) != shimPid {
			t.Errorf("v3 (containerd.task.v3.Task) Connect: %v (err %v), want shim pid %d", v3resp, err, shimPid)
		}
		expectRunning(t, ctx, liveTask, "after the bad input")
		if code := runExecTimed(t, ctx, liveTask, "after-bad-input", directCallTimeout, "sh", "-c", "exit 2"); code != 2 {
			t.Errorf("exec through containerd after the bad input: exit code %d, want 2", code)
		}
		t.Logf("%d bad requests tried against shim %d", tried, shimPid)
	})
}

// directShim is a ttrpc connection straight to a shim's socket.
type directShim struct {
	t      *testing.T
	d      *harness.Daemon
	ctx    context.Context // carries the namespace (containerd's and ttrpc's metadata)
	ns     string
	group  string
	socket string
	ttrpc  *ttrpc.Client
	v2     taskv2.TaskService
}

func dialShim(t *testing.T, ctx context.Context, d *harness.Daemon, ns, socket, group string) *directShim {
	t.Helper()
	conn, err := net.DialTimeout("unix", socket, 5*time.Second)
	if err != nil {
		t.Fatalf("dial shim socket %s: %v", socket, err)
	}
	c := ttrpc.NewClient(conn)
	t.Cleanup(func() { c.Close() })
	return &directShim{
		t: t, d: d, ns: ns, group: group, socket: socket, ttrpc: c, v2: taskv2.NewTaskClient(c),
		ctx: ttrpc.WithMetadata(ctx, ttrpc.MD{"containerd-namespace-ttrpc": []string{ns}}),
	}
}

// call returns a context for one call, bounded by directCallTimeout (released with the
// test's context).
func (s *directShim) call() context.Context {
	ctx, cancel := context.WithTimeout(s.ctx, directCallTimeout)
	s.t.Cleanup(cancel)
	return ctx
}

// specOf returns a container's OCI spec as config.json bytes.
func (s *directShim) specOf(c containerd.Container) []byte {
	s.t.Helper()
	spec, err := c.Spec(s.ctx)
	if err != nil {
		s.t.Fatal(err)
	}
	data, err := json.Marshal(spec)
	if err != nil {
		s.t.Fatal(err)
	}
	return data
}

// processSpec is an exec process spec for the shim (the container's own user and env).
func (s *directShim) processSpec(args ...string) *anypb.Any {
	s.t.Helper()
	a, err := typeurl.MarshalAnyToProto(&specs.Process{Args: args, Cwd: "/", Env: []string{"PATH=/bin"}})
	if err != nil {
		s.t.Fatal(err)
	}
	return a
}

// validRequest prepares what containerd would for a new task id in the namespace: a
// container record (for its spec and a fresh rootfs snapshot), a bundle dir in the state dir
// with config.json and rootfs/, and returns a Create request that the shim would accept.
// Each test case then spoils one field. The bundle is removed when the test ends.
func (s *directShim) validRequest(id string) *taskv2.CreateTaskRequest {
	s.t.Helper()
	c := newContainer(s.t, s.ctx, s.d, id+"-"+harness.RandID(4), []string{"sleep", "1000000"}, groupAnnotation(s.group))
	info, err := c.Info(s.ctx)
	if err != nil {
		s.t.Fatal(err)
	}
	mounts, err := s.d.Client().SnapshotService(info.Snapshotter).Mounts(s.ctx, info.SnapshotKey)
	if err != nil {
		s.t.Fatalf("rootfs mounts of %s: %v", c.ID(), err)
	}
	bundle := s.d.BundleDir(s.ns, id)
	if err := os.MkdirAll(filepath.Join(bundle, "rootfs"), 0o711); err != nil {
		s.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(bundle, "config.json"), s.specOf(c), 0o600); err != nil {
		s.t.Fatal(err)
	}
	s.t.Cleanup(func() {
		harness.UnmountUnder(bundle)
		os.RemoveAll(bundle)
	})
	req := &taskv2.CreateTaskRequest{ID: id, Bundle: bundle}
	for _, m := range mounts {
		req.Rootfs = append(req.Rootfs, &types.Mount{Type: m.Type, Source: m.Source, Target: m.Target, Options: m.Options})
	}
	return req
}

// deleteIfCreated removes a task the shim should have refused but created.
func (s *directShim) deleteIfCreated(id string) {
	if _, err := s.v2.State(s.call(), &taskv2.StateRequest{ID: id}); err != nil {
		return
	}
	s.t.Errorf("task %s exists in the shim after its Create was refused", id)
	s.v2.Kill(s.call(), &taskv2.KillRequest{ID: id, Signal: uint32(syscall.SIGKILL), All: true})
	time.Sleep(200 * time.Millisecond)
	s.v2.Delete(s.call(), &taskv2.DeleteRequest{ID: id})
}

// noTrace fails the test if a refused (or deleted) task id left runc state or mounts; it
// then removes the test's own bundle dir, if any.
func (s *directShim) noTrace(id, bundle string) {
	s.t.Helper()
	if _, err := os.Lstat(harness.RuncStateDir(s.ns, id)); err == nil {
		s.t.Errorf("%s: runc state %s left", id, harness.RuncStateDir(s.ns, id))
	}
	for _, dir := range []string{bundle, s.d.BundleDir(s.ns, id)} {
		if dir == "" {
			continue
		}
		if m := harness.MountsUnder(dir); len(m) > 0 {
			s.t.Errorf("%s: mounts left under %s: %v", id, dir, m)
		}
		harness.UnmountUnder(dir)
		os.RemoveAll(dir)
	}
}

// rawFrame sends one ttrpc request frame of the given payload size (garbage bytes) on a
// fresh connection and returns the status the shim answers with.
func (s *directShim) rawFrame(size int, stream uint32) (codes.Code, string) {
	s.t.Helper()
	conn, err := net.DialTimeout("unix", s.socket, 5*time.Second)
	if err != nil {
		s.t.Fatalf("dial %s: %v", s.socket, err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(directCallTimeout))
	var hdr [10]byte
	binary.BigEndian.PutUint32(hdr[0:4], uint32(size))
	binary.BigEndian.PutUint32(hdr[4:8], stream)
	hdr[8] = 1 // request
	go func() {
		w := bufio.NewWriterSize(conn, 64<<10)
		w.Write(hdr[:])
		chunk := make([]byte, 64<<10)
		for i := range chunk {
			chunk[i] = 0xff
		}
		for left := size; left > 0; left -= len(chunk) {
			if left < len(chunk) {
				chunk = chunk[:left]
			}
			if _, err := w.Write(chunk); err != nil {
				return
			}
		}
		w.Flush()
	}()
	var rh [10]byte
	if _, err := io.ReadFull(conn, rh[:]); err != nil {
		return codes.Unknown, fmt.Sprintf("no answer: %v", err)
	}
	body := make([]byte, binary.BigEndian.Uint32(rh[0:4]))
	if _, err := io.ReadFull(conn, body); err != nil {
		return codes.Unknown, fmt.Sprintf("short answer: %v", err)
	}
	var resp ttrpc.Response
	if err := proto.Unmarshal(body, &resp); err != nil {
		return codes.Unknown, fmt.Sprintf("undecodable answer: %v", err)
	}
	st := status.FromProto(resp.Status)
	return st.Code(), st.Message()
}
