package harness

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/errdefs"
	"github.com/containerd/platforms"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/net/websocket"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// CRI constants: the namespace containerd's CRI plugin keeps everything in, the runtime
// handler a CRI daemon (WithCRI) maps to the runtime under test, and the sandbox ("pause")
// image the harness makes from the test image (CRI only pulls it when it is missing, and no
// registry is reachable here).
const (
	CRINamespace      = "k8s.io"
	CRIRuntimeHandler = "example"
	PauseImageName    = "example.test/pause:latest"
)

// PauseCommand is what the sandbox image runs.
var PauseCommand = []string{"sleep", "1000000"}

// CRI is a client of a CRI daemon's runtime and image services, as kubelet uses them.
type CRI struct {
	Runtime runtimeapi.RuntimeServiceClient
	Images  runtimeapi.ImageServiceClient
	conn    *grpc.ClientConn

	mu      sync.Mutex
	cgroups []string // cgroup parents handed out by NewCgroupParent
}

// NewCgroupParent returns a unique cgroup parent for a pod ("/ex-cri-<rand>"); the
// daemon's cleanup removes it (in every hierarchy) after the pods are gone.
func (c *CRI) NewCgroupParent() string {
	p := "/ex-cri-" + RandID(12)
	c.mu.Lock()
	c.cgroups = append(c.cgroups, p)
	c.mu.Unlock()
	return p
}

// Close closes the connection.
func (c *CRI) Close() error { return c.conn.Close() }

// StartCRIDaemon starts a private daemon of the flavor with the CRI plugin enabled
// (WithCRI), imports the test image and the pause image into the k8s.io namespace, waits
// until CRI reports the runtime ready and lists both images, and returns it with a CRI
// client; opts add to the CRI variant (WithCRIHandler). Cleanup (also after a failure)
// stops and removes every pod sandbox and container through CRI, then makes sure no shim,
// runc state or bundle of k8s.io is left (killing and force-deleting what is, and failing
// the test), and finally stops the daemon.
//
// The daemon never tracks k8s.io for its own Stop: that would force-delete every runc
// container of /run/containerd/runc/k8s.io, which other containerd instances on the host may
// share; only ids this daemon created are touched.
func StartCRIDaemon(t testing.TB, flavor string, opts ...DaemonOption) (*Daemon, *CRI) {
	t.Helper()
	d := StartDaemon(t, flavor, append(opts, WithCRI())...)
	conn, err := grpc.NewClient("unix://"+d.Address, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatalf("containerd %s: CRI client: %v", flavor, err)
	}
	cri := &CRI{Runtime: runtimeapi.NewRuntimeServiceClient(conn), Images: runtimeapi.NewImageServiceClient(conn), conn: conn}
	t.Cleanup(func() { conn.Close() })

	seen := map[string]bool{} // every pod and container id this daemon had, for the leak check
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		if err := cri.RemoveAll(ctx, seen); err != nil {
			t.Errorf("containerd %s: CRI cleanup: %v", flavor, err)
		}
		if left := d.WaitCRILeftovers(seen, LeakTimeout); len(left) > 0 {
			t.Errorf("containerd %s: CRI leftovers after every pod was removed: %s", flavor, strings.Join(left, "; "))
			d.KillShims(CRINamespace, "")
			for id := range seen {
				forceDeleteRuncID(CRINamespace, id)
			}
		}
		cri.mu.Lock()
		defer cri.mu.Unlock()
		for _, p := range cri.cgroups {
			if err := RemoveCgroup(p); err != nil {
				t.Errorf("containerd %s: pod cgroup %s left: %v", flavor, p, err)
			}
		}
	})

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := d.ImportCRIImages(ctx); err != nil {
		t.Fatalf("containerd %s: %v", flavor, err)
	}
	if err := cri.WaitReady(ctx, ImageName, PauseImageName); err != nil {
		t.Fatalf("containerd %s: %v", flavor, err)
	}
	return d, cri
}

// ImportCRIImages imports the test image into the k8s.io namespace and adds the pause
// image: the same layer with a config whose command is PauseCommand.
func (d *Daemon) ImportCRIImages(ctx context.Context) error {
	c := d.Client()
	ctx = namespaces.WithNamespace(ctx, CRINamespace)
	ctx, done, err := c.WithLease(ctx)
	if err != nil {
		return err
	}
	defer done(context.WithoutCancel(ctx))
	img, err := ImportImage(ctx, c, "")
	if err != nil {
		return fmt.Errorf("import test image into %s: %w", CRINamespace, err)
	}
	cs := c.ContentStore()
	manifest, err := images.Manifest(ctx, cs, img.Target(), platforms.Default())
	if err != nil {
		return fmt.Errorf("manifest of %s: %w", ImageName, err)
	}
	raw, err := content.ReadBlob(ctx, cs, manifest.Config)
	if err != nil {
		return err
	}
	var cfg ocispec.Image
	if err := json.Unmarshal(raw, &cfg); err != nil {
		return err
	}
	cfg.Config.Entrypoint = nil
	cfg.Config.Cmd = PauseCommand
	cfgJSON, err := json.Marshal(cfg)
	if err != nil {
		return err
	}
	manifest.Config = ocispec.Descriptor{MediaType: ocispec.MediaTypeImageConfig, Digest: digest.FromBytes(cfgJSON), Size: int64(len(cfgJSON))}
	manJSON, err := json.Marshal(manifest)
	if err != nil {
		return err
	}
	manDesc := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromBytes(manJSON), Size: int64(len(manJSON))}
	// The manifest keeps its config and layers alive for the garbage collector.
	labels := map[string]string{"containerd.io/gc.ref.content.config": manifest.Config.Digest.String()}
	for i, l := range manifest.Layers {
		labels[fmt.Sprintf("containerd.io/gc.ref.content.l.%d", i)] = l.Digest.String()
	}
	if err := content.WriteBlob(ctx, cs, "pause-config-"+manifest.Config.Digest.Encoded(), bytes.NewReader(cfgJSON), manifest.Config); err != nil {
		return fmt.Errorf("write pause config: %w", err)
	}
	if err := content.WriteBlob(ctx, cs, "pause-manifest-"+manDesc.Digest.Encoded(), bytes.NewReader(manJSON), manDesc, content.WithLabels(labels)); err != nil {
		return fmt.Errorf("write pause manifest: %w", err)
	}
	rec := images.Image{Name: PauseImageName, Target: manDesc}
	if _, err := c.ImageService().Create(ctx, rec); errdefs.IsAlreadyExists(err) {
		_, err = c.ImageService().Update(ctx, rec)
		if err != nil {
			return fmt.Errorf("update %s: %w", PauseImageName, err)
		}
	} else if err != nil {
		return fmt.Errorf("create %s: %w", PauseImageName, err)
	}
	if err := containerd.NewImage(c, rec).Unpack(ctx, ""); err != nil {
		return fmt.Errorf("unpack %s: %w", PauseImageName, err)
	}
	return nil
}

// WaitReady waits until CRI reports the runtime condition ready and knows the images.
func (c *CRI) WaitReady(ctx context.Context, imgs ...string) error {
	var last string
	for {
		last = c.notReady(ctx, imgs)
		if last == "" {
			return nil
		}
		if permanent, ok := strings.CutPrefix(last, "!"); ok {
			return errors.New(permanent)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("CRI not ready: %s", last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (c *CRI) notReady(ctx context.Context, imgs []string) string {
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	st, err := c.Runtime.Status(cctx, &runtimeapi.StatusRequest{})
	if status.Code(err) == codes.Unimplemented {
		// The daemon serves (StartDaemon waited for it), so the plugin failed to load.
		return "!CRI plugin not loaded (see the daemon's log: \"failed to load plugin\"): " + err.Error()
	}
	if err != nil {
		return fmt.Sprintf("Status: %v", err)
	}
	for _, cond := range st.GetStatus().GetConditions() {
		if cond.Type == runtimeapi.RuntimeReady && !cond.Status {
			return fmt.Sprintf("RuntimeReady false: %s %s", cond.Reason, cond.Message)
		}
	}
	for _, img := range imgs {
		r, err := c.Images.ImageStatus(cctx, &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: img}})
		if err != nil {
			return fmt.Sprintf("ImageStatus %s: %v", img, err)
		}
		if r.GetImage() == nil {
			return "image " + img + " not listed by CRI"
		}
	}
	return ""
}

// RemoveAll stops and removes every pod sandbox (and with it its containers) and every
// remaining container, recording their ids in seen. Errors are collected, not fatal.
func (c *CRI) RemoveAll(ctx context.Context, seen map[string]bool) error {
	var errs []error
	pods, err := c.Runtime.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{})
	if err != nil {
		return fmt.Errorf("ListPodSandbox: %w", err)
	}
	ctrs, err := c.Runtime.ListContainers(ctx, &runtimeapi.ListContainersRequest{})
	if err != nil {
		return fmt.Errorf("ListContainers: %w", err)
	}
	for _, ctr := range ctrs.GetContainers() {
		seen[ctr.Id] = true
		if _, err := c.Runtime.StopContainer(ctx, &runtimeapi.StopContainerRequest{ContainerId: ctr.Id, Timeout: 0}); err != nil {
			errs = append(errs, fmt.Errorf("StopContainer %s: %w", ctr.Id, err))
		}
		if _, err := c.Runtime.RemoveContainer(ctx, &runtimeapi.RemoveContainerRequest{ContainerId: ctr.Id}); err != nil {
			errs = append(errs, fmt.Errorf("RemoveContainer %s: %w", ctr.Id, err))
		}
	}
	for _, p := range pods.GetItems() {
		seen[p.Id] = true
		if _, err := c.Runtime.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: p.Id}); err != nil {
			errs = append(errs, fmt.Errorf("StopPodSandbox %s: %w", p.Id, err))
		}
		if _, err := c.Runtime.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: p.Id}); err != nil {
			errs = append(errs, fmt.Errorf("RemovePodSandbox %s: %w", p.Id, err))
		}
	}
	return errors.Join(errs...)
}

// CRILeftovers lists what remains of k8s.io on this daemon: shim processes, mounts under the
// daemon's dir, bundles, and runc state of the given ids.
func (d *Daemon) CRILeftovers(ids map[string]bool) []string {
	left := d.Leftovers(CRINamespace, "")
	// Leftovers(ns, "") also lists /run/containerd/runc/k8s.io, which other daemons may
	// share: keep only this daemon's ids from it.
	var out []string
	shared := filepath.Join(RuncRoot, CRINamespace) + "/"
	for _, l := range left {
		if p, ok := strings.CutPrefix(l, "path "+shared); ok && !ids[p] {
			continue
		}
		out = append(out, l)
	}
	return out
}

// WaitCRILeftovers polls CRILeftovers until it is empty or timeout passes.
func (d *Daemon) WaitCRILeftovers(ids map[string]bool, timeout time.Duration) []string {
	return pollUntilEmpty(timeout, func() []string { return d.CRILeftovers(ids) })
}

// forceDeleteRuncID force-deletes one runc container of ns (its shim is gone).
func forceDeleteRuncID(ns, id string) {
	if _, err := os.Stat(RuncStateDir(ns, id)); err != nil {
		return
	}
	forceDeleteRuntimeContainer(filepath.Join(RuncRoot, ns), id)
}

// forceDeleteRuntimeContainer force-deletes the container id of the runtime
// state directory root with the runtime under test (RuncUnderTest): runc
// cannot delete crun's containers.
func forceDeleteRuntimeContainer(root, id string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	runtime := "runc"
	if CrunUnderTest() {
		runtime = RuncUnderTest()
	}
	_ = exec.CommandContext(ctx, runtime, "--root", root, "delete", "--force", id).Run()
}

// CgroupHierarchies lists the mounted cgroup hierarchies under /sys/fs/cgroup (each
// v1 controller mount, and the unified one if mounted).
func CgroupHierarchies() []string {
	var out []string
	for _, m := range MountsUnder("/sys/fs/cgroup") {
		if m.FSType == "cgroup" || m.FSType == "cgroup2" {
			out = append(out, m.Point)
		}
	}
	return out
}

// RemoveCgroup removes the (empty) cgroup at path (e.g. "/ex-cri-1234") and its empty
// sub-cgroups from every hierarchy, deepest first. Cgroups with processes stay and are
// reported.
func RemoveCgroup(path string) error {
	var errs []error
	for _, h := range CgroupHierarchies() {
		root := filepath.Join(h, path)
		if _, err := os.Stat(root); err != nil {
			continue
		}
		var dirs []string
		_ = filepath.WalkDir(root, func(p string, e os.DirEntry, err error) error {
			if err == nil && e.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		for i := len(dirs) - 1; i >= 0; i-- {
			if err := os.Remove(dirs[i]); err != nil && !os.IsNotExist(err) {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// Stream is a connection to the CRI streaming server (exec, attach) speaking the WebSocket
// protocol v4.channel.k8s.io: every message is one channel byte (0 stdin, 1 stdout,
// 2 stderr, 3 status) followed by data; the status is a JSON metav1.Status.
type Stream struct {
	ws *websocket.Conn
}

// DialStream connects to a URL returned by RuntimeService.Exec or Attach.
func DialStream(ctx context.Context, rawURL string) (*Stream, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, err
	}
	switch u.Scheme {
	case "http":
		u.Scheme = "ws"
	default:
		return nil, fmt.Errorf("streaming URL %s: only plain http is supported by the harness", rawURL)
	}
	cfg, err := websocket.NewConfig(u.String(), "http://127.0.0.1/")
	if err != nil {
		return nil, err
	}
	cfg.Protocol = []string{"v4.channel.k8s.io"}
	ws, err := cfg.DialContext(ctx)
	if err != nil {
		return nil, fmt.Errorf("websocket dial %s: %w", u, err)
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = ws.SetDeadline(dl)
	}
	return &Stream{ws: ws}, nil
}

// Send writes data to a channel (0 = stdin).
func (s *Stream) Send(channel byte, data []byte) error {
	return websocket.Message.Send(s.ws, append([]byte{channel}, data...))
}

// Next returns the next non-empty message; io.EOF when the server closed the stream.
func (s *Stream) Next() (channel byte, data []byte, err error) {
	for {
		var msg []byte
		if err := websocket.Message.Receive(s.ws, &msg); err != nil {
			return 0, nil, err
		}
		if len(msg) > 1 {
			return msg[0], msg[1:], nil
		}
	}
}

// Close closes the connection.
func (s *Stream) Close() error { return s.ws.Close() }

// StreamResult is what a CRI exec over the streaming server produced.
type StreamResult struct {
	Stdout, Stderr string
	ExitCode       int    // from the v4 status (0 on "Success")
	Status         string // the raw status message
}

// ExecStream runs a CRI Exec URL (from RuntimeService.Exec with stdout and stderr, no
// stdin, no tty) to its end and returns the output and the exit code from the status.
func ExecStream(ctx context.Context, rawURL string) (StreamResult, error) {
	var res StreamResult
	s, err := DialStream(ctx, rawURL)
	if err != nil {
		return res, err
	}
	defer s.Close()
	var stdout, stderr, status bytes.Buffer
	for {
		ch, data, err := s.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return res, fmt.Errorf("websocket receive (stdout so far %q): %w", stdout.String(), err)
		}
		switch ch {
		case 1:
			stdout.Write(data)
		case 2:
			stderr.Write(data)
		case 3:
			status.Write(data)
		}
	}
	res.Stdout, res.Stderr, res.Status = stdout.String(), stderr.String(), status.String()
	var st struct {
		Status  string `json:"status"`
		Details struct {
			Causes []struct {
				Reason  string `json:"reason"`
				Message string `json:"message"`
			} `json:"causes"`
		} `json:"details"`
	}
	if err := json.Unmarshal(status.Bytes(), &st); err != nil {
		return res, fmt.Errorf("exec status %q: %w", status.String(), err)
	}
	if st.Status == "Success" {
		return res, nil
	}
	for _, c := range st.Details.Causes {
		if c.Reason == "ExitCode" {
			res.ExitCode, err = strconv.Atoi(c.Message)
			return res, err
		}
	}
	return res, fmt.Errorf("exec failed: %s", status.String())
}
