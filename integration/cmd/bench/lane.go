package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/containerd/containerd/api/types/runc/options"
	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/containers"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/oci"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/example/containerd-shim-example-v2/integration/harness"
)

// CRI runtime handlers of a lane's daemon, one per shim.
const (
	handlerA = "bench-stock"
	handlerB = "bench-example"
)

// laneResult is what one lane measured.
type laneResult struct {
	lane       lane
	results    []*sample
	notes      []string
	version    string // the OCI runtime's version line
	containerd string // containerd's version line
	took       time.Duration
}

// bench is one lane's run: its daemon, clients and results.
type bench struct {
	cfg    config
	lane   lane
	d      *harness.Daemon
	cri    *harness.CRI
	client *containerd.Client
	ctx    context.Context
	ns     string
	image  containerd.Image
	res    *laneResult
	seq    int
	// binaryConfig is a runtime options file naming lane.binary (ctr's
	// --runtime-config-path and CRI's ConfigPath for this shim).
	binaryConfig string
}

func runLane(cfg config, l lane) (*laneResult, error) {
	start := time.Now()
	res := &laneResult{lane: l}
	// The options file must exist before the daemon reads its config.
	binaryConfig := ""
	if l.binary != "" {
		f, err := os.CreateTemp("", "bench-runtime-options-*.toml")
		if err != nil {
			return nil, err
		}
		fmt.Fprintf(f, "BinaryName = %q\n", l.binary)
		f.Close()
		defer os.Remove(f.Name())
		binaryConfig = f.Name()
	}
	hA := harness.CRIHandler{Name: handlerA, RuntimeType: runtimeA}
	hB := harness.CRIHandler{Name: handlerB}
	if l.binary != "" {
		hA.Options = []string{fmt.Sprintf("BinaryName = %q", l.binary)}
		hB.Options = []string{fmt.Sprintf("ConfigPath = %q", binaryConfig)}
	}
	dopts := []harness.DaemonOption{harness.WithCRIHandler(hA), harness.WithCRIHandler(hB)}
	if l.binary != "" {
		dopts = append(dopts, harness.WithLegacyCgroups())
	}
	if harness.FlavorMajor(l.flavor) == 2 {
		// The pod sandbox rows (sandbox.go): this shim as the pods' sandboxer. An options
		// table on such a handler needs containerd 2.3+ (docs/kubernetes.md).
		var sbxOpts []string
		if l.binary != "" {
			sbxOpts = []string{fmt.Sprintf("BinaryName = %q", l.binary)}
		}
		dopts = append(dopts, harness.WithShimSandboxer(sbxOpts...))
	}
	d, err := harness.NewDaemon(l.flavor, dopts...)
	if err != nil {
		return nil, err
	}
	defer d.Stop()
	res.version = binaryVersion(lookPath(runtimeBinary(l), d.PATH))
	res.containerd = binaryVersion(d.Containerd)
	ns := "bench-" + harness.RandID(6)
	d.TrackNamespace(ns)
	ctx := namespaces.WithNamespace(context.Background(), ns)
	img, err := harness.ImportImage(ctx, d.Client(), "")
	if err != nil {
		return nil, err
	}
	b := &bench{cfg: cfg, lane: l, d: d, client: d.Client(), ctx: ctx, ns: ns, image: img, res: res, binaryConfig: binaryConfig}
	defer func() {
		_ = harness.CleanupNamespace(context.Background(), d.Client(), ns)
		// The runtime's /<ns> cgroup parent, which nothing else removes.
		if err := harness.RemoveCgroup("/" + ns); err != nil {
			fmt.Fprintf(os.Stderr, "bench: cgroup parent /%s left: %v\n", ns, err)
		}
	}()

	steps := []struct {
		name string
		fn   func() error
	}{
		{"lifecycle (Go client)", b.lifecycle},
		{"ctr run --rm", b.ctrRun},
		{"exec cycle", b.execCycle},
		{"runtime floor", b.runtimeFloor},
		{"exit -> /tasks/exit latency", b.exitLatency},
		{"interactive echo latency", b.interactive},
		{"cri exec probes and pod start", b.criSteps},
		{"pod sandbox (shim sandboxer vs pause container)", b.sandboxPods},
		{"stdout throughput", b.throughput},
		{"idle memory", b.idleMemory},
		{"pod memory and start time", b.podMemory},
		{"in-place upgrade pause", b.upgradePause},
	}
	for _, s := range steps {
		if !selected(cfg.only, s.name) {
			continue
		}
		fmt.Fprintf(os.Stderr, "bench: %s: %s...\n", l, s.name)
		if err := s.fn(); err != nil {
			return nil, fmt.Errorf("%s: %w", s.name, err)
		}
	}
	res.took = time.Since(start)
	return res, nil
}

// criClient connects to the lane's CRI plugin (on first use: importing the
// pause image takes a moment) and waits until it is ready.
func (b *bench) criClient() (*harness.CRI, error) {
	if b.cri != nil {
		return b.cri, nil
	}
	conn, err := grpc.NewClient("unix://"+b.d.Address, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, err
	}
	cri := &harness.CRI{Runtime: runtimeapi.NewRuntimeServiceClient(conn), Images: runtimeapi.NewImageServiceClient(conn)}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := b.d.ImportCRIImages(ctx); err != nil {
		conn.Close()
		return nil, err
	}
	if err := cri.WaitReady(ctx, harness.ImageName, harness.PauseImageName); err != nil {
		conn.Close()
		return nil, err
	}
	b.cri = cri
	return cri, nil
}

func (b *bench) newSample(key, name, unit string, lowerWins bool) *sample {
	s := &sample{key: key, name: name, unit: unit, lowerWins: lowerWins, pct: 50}
	b.res.results = append(b.res.results, s)
	return s
}

func (b *bench) id(prefix string) string {
	b.seq++
	return fmt.Sprintf("%s-%d", prefix, b.seq)
}

// both runs fn for A and B alternately, n times each.
func (b *bench) both(n int, fn func(rt string) error) error {
	for i := 0; i < n; i++ {
		order := []string{runtimeA, runtimeB}
		if i%2 == 1 { // alternate which goes first
			order = []string{runtimeB, runtimeA}
		}
		for _, rt := range order {
			if err := fn(rt); err != nil {
				return fmt.Errorf("%s: %w", rt, err)
			}
		}
	}
	return nil
}

func (b *bench) container(rt, id string, args []string, opts ...oci.SpecOpts) (containerd.Container, error) {
	specOpts := append([]oci.SpecOpts{oci.WithImageConfig(b.image), oci.WithProcessArgs(args...)}, opts...)
	var runtimeOpts any
	if b.lane.binary != "" {
		// containerd hands the container's runtime options to the shim's Create.
		runtimeOpts = &options.Options{BinaryName: b.lane.binary}
		specOpts = append(specOpts, crunSpecVersion)
	}
	return b.client.NewContainer(b.ctx, id,
		containerd.WithImage(b.image),
		containerd.WithNewSnapshot(id+"-snap", b.image),
		containerd.WithRuntime(rt, runtimeOpts),
		containerd.WithNewSpec(specOpts...))
}

// crunSpecVersion: crun 1.8 knows spec versions up to 1.0.x (what containerd 1.6 writes).
func crunSpecVersion(_ context.Context, _ oci.Client, _ *containers.Container, s *oci.Spec) error {
	s.Version = "1.0.2-dev"
	return nil
}

func (b *bench) remove(c containerd.Container) {
	_ = c.Delete(b.ctx, containerd.WithSnapshotCleanup)
}

// runOnce starts a created process (task or exec), waits for its exit and
// deletes it; exitSeen is when the exit reached the client.
func (b *bench) runOnce(p containerd.Process) (exitSeen time.Time, err error) {
	ch, err := p.Wait(b.ctx)
	if err != nil {
		return exitSeen, err
	}
	if err := p.Start(b.ctx); err != nil {
		return exitSeen, err
	}
	<-ch
	exitSeen = time.Now()
	_, err = p.Delete(b.ctx)
	return exitSeen, err
}

// sleeper starts a long-running container; stop kills and removes it.
func (b *bench) sleeper(rt, id string, opts ...oci.SpecOpts) (c containerd.Container, task containerd.Task, stop func(), err error) {
	c, err = b.container(rt, id, []string{"sleep", "100000"}, opts...)
	if err != nil {
		return nil, nil, nil, err
	}
	task, err = c.NewTask(b.ctx, cio.NullIO)
	if err == nil {
		err = task.Start(b.ctx)
	}
	stop = func() {
		if task != nil {
			_, _ = task.Delete(b.ctx, containerd.WithProcessKill)
		}
		b.remove(c)
	}
	if err != nil {
		stop()
		return nil, nil, nil, err
	}
	return c, task, stop, nil
}

// shimPid finds the shim process serving a container (or pod) id.
func (b *bench) shimPid(ns, id string) (int, error) {
	shim := b.d.ShimProcesses(ns, id)
	if len(shim) == 0 {
		return 0, fmt.Errorf("no shim process for %s", id)
	}
	return shim[0].Pid, nil
}

// runtimeBinary is the OCI runtime a lane runs.
func runtimeBinary(l lane) string {
	if l.binary != "" {
		return l.binary
	}
	return "runc"
}

// fifoDir is where the benchmark makes its own FIFOs.
func (b *bench) fifoDir() string { return filepath.Join(b.d.Base, "fifo") }
