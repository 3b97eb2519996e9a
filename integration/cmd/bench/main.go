// Command bench measures containerd-shim-example-v2 against containerd's
// stock containerd-shim-runc-v2, side by side in one run: one private
// containerd, the same runc, the two runtimes alternating (A = stock runc-v2,
// B = this shim), and prints medians, min-max and the B/A ratio.
//
//	go run ./cmd/bench [-quick] [-flavor 1.6|2.x] [-out docs/benchmarks.md]
//
// Timings here are for reading, not for asserting: no test depends on them.
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	apievents "github.com/containerd/containerd/api/events"
	"github.com/containerd/containerd/api/types/runc/options"
	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/containers"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/oci"
	"github.com/containerd/typeurl/v2"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/example/containerd-shim-example-v2/integration/harness"
)

const (
	runtimeA = "io.containerd.runc.v2" // baseline: containerd's stock shim
	runtimeB = "io.example.v2"         // this shim
)

type config struct {
	quick      bool
	flavor     string
	iterations int
	throughput int64 // bytes per throughput run
	podSizes   []int
	out        string
	only       string // comma-separated step names (substrings) to run; empty: all
	binary     string // OCI runtime for both shims (BinaryName); empty: runc
}

func main() {
	var c config
	flag.BoolVar(&c.quick, "quick", false, "a short run (a few minutes) for CI smoke testing")
	flag.StringVar(&c.flavor, "flavor", "1.6", "containerd flavor: 1.6 or 2.x")
	flag.StringVar(&c.out, "out", "", "also write the report (markdown) to this file")
	flag.StringVar(&c.binary, "runtime-binary", "", "OCI runtime both shims run (BinaryName), e.g. crun; the daemon then runs in a private mount namespace without /sys/fs/cgroup/unified (crun 1.8 refuses hybrid cgroups)")
	flag.StringVar(&c.only, "only", "", "run only the steps whose names contain one of these comma-separated words (e.g. throughput,exec)")
	flag.Parse()
	c.iterations, c.throughput, c.podSizes = 30, 1<<30, []int{10, 50}
	if c.quick {
		c.iterations, c.throughput = 5, 256<<20
	}
	if err := run(c); err != nil {
		fmt.Fprintf(os.Stderr, "bench: %v\n", err)
		os.Exit(1)
	}
}

// selected reports whether a step runs under -only.
func selected(only, step string) bool {
	if only == "" {
		return true
	}
	for _, w := range strings.Split(only, ",") {
		if w = strings.TrimSpace(w); w != "" && strings.Contains(step, w) {
			return true
		}
	}
	return false
}

// sample is one measured quantity for both runtimes.
type sample struct {
	name, unit string
	a, b       []float64
	lowerWins  bool
}

func (s *sample) add(rt string, v float64) {
	if rt == runtimeA {
		s.a = append(s.a, v)
	} else {
		s.b = append(s.b, v)
	}
}

type bench struct {
	cfg     config
	d       *harness.Daemon
	client  *containerd.Client
	ctx     context.Context
	image   containerd.Image
	results []*sample
	notes   []string
	seq     int
	// binaryConfig is a runtime options file naming cfg.binary (ctr's
	// --runtime-config-path for this shim).
	binaryConfig string
}

func (b *bench) newSample(name, unit string, lowerWins bool) *sample {
	s := &sample{name: name, unit: unit, lowerWins: lowerWins}
	b.results = append(b.results, s)
	return s
}

func (b *bench) id(prefix string) string {
	b.seq++
	return fmt.Sprintf("%s-%d", prefix, b.seq)
}

func run(cfg config) error {
	var dopts []harness.DaemonOption
	if cfg.binary != "" {
		dopts = append(dopts, harness.WithLegacyCgroups())
	}
	d, err := harness.NewDaemon(cfg.flavor, dopts...)
	if err != nil {
		return err
	}
	defer d.Stop()
	ns := "bench-" + harness.RandID(6)
	d.TrackNamespace(ns)
	ctx := namespaces.WithNamespace(context.Background(), ns)
	img, err := harness.ImportImage(ctx, d.Client(), "")
	if err != nil {
		return err
	}
	b := &bench{cfg: cfg, d: d, client: d.Client(), ctx: ctx, image: img}
	if cfg.binary != "" {
		b.binaryConfig = filepath.Join(d.Base, "runtime-options.toml")
		if err := os.WriteFile(b.binaryConfig, []byte(fmt.Sprintf("BinaryName = %q\n", cfg.binary)), 0o644); err != nil {
			return err
		}
	}
	defer func() {
		_ = harness.CleanupNamespace(context.Background(), d.Client(), ns)
		// The runtime's /<ns> cgroup parent, which nothing else removes.
		if err := harness.RemoveCgroup("/" + ns); err != nil {
			fmt.Fprintf(os.Stderr, "bench: cgroup parent /%s left: %v\n", ns, err)
		}
	}()

	start := time.Now()
	steps := []struct {
		name string
		fn   func() error
	}{
		{"lifecycle (Go client)", b.lifecycle},
		{"ctr run --rm", b.ctrRun},
		{"exec cycle", b.execCycle},
		{"exit -> /tasks/exit latency", b.exitLatency},
		{"stdout throughput", b.throughput},
		{"idle memory", b.idleMemory},
		{"pod memory and start time", b.podMemory},
	}
	for _, s := range steps {
		if !selected(cfg.only, s.name) {
			continue
		}
		fmt.Fprintf(os.Stderr, "bench: %s...\n", s.name)
		if err := s.fn(); err != nil {
			return fmt.Errorf("%s: %w", s.name, err)
		}
	}
	report := b.report(time.Since(start))
	fmt.Print(report)
	if cfg.out != "" {
		return os.WriteFile(cfg.out, []byte(report), 0o644)
	}
	return nil
}

// both runs fn for A and B alternately, iterations times.
func (b *bench) both(n int, fn func(rt string) error) error {
	for i := 0; i < n; i++ {
		for _, rt := range []string{runtimeA, runtimeB} {
			if i%2 == 1 { // alternate which goes first
				rt = map[string]string{runtimeA: runtimeB, runtimeB: runtimeA}[rt]
			}
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
	if b.cfg.binary != "" {
		// containerd hands the container's runtime options to the shim's Create.
		runtimeOpts = &options.Options{BinaryName: b.cfg.binary}
		// crun 1.8 knows spec versions up to 1.0.x (what containerd 1.6 writes).
		specOpts = append(specOpts, func(_ context.Context, _ oci.Client, _ *containers.Container, s *oci.Spec) error {
			s.Version = "1.0.2-dev"
			return nil
		})
	}
	return b.client.NewContainer(b.ctx, id,
		containerd.WithImage(b.image),
		containerd.WithNewSnapshot(id+"-snap", b.image),
		containerd.WithRuntime(rt, runtimeOpts),
		containerd.WithNewSpec(specOpts...))
}

func (b *bench) remove(c containerd.Container) {
	_ = c.Delete(b.ctx, containerd.WithSnapshotCleanup)
}

// lifecycle: NewTask -> Wait -> Start -> exit -> Delete of `true`, timed
// from NewTask to the end of Delete (container metadata is set up outside).
func (b *bench) lifecycle() error {
	s := b.newSample("lifecycle: create+start+wait+delete `true` (Go client)", "ms", true)
	return b.both(b.cfg.iterations, func(rt string) error {
		c, err := b.container(rt, b.id("lc"), []string{"true"})
		if err != nil {
			return err
		}
		defer b.remove(c)
		t0 := time.Now()
		task, err := c.NewTask(b.ctx, cio.NullIO)
		if err != nil {
			return err
		}
		if err := b.runOnce(task); err != nil {
			return err
		}
		s.add(rt, ms(time.Since(t0)))
		return nil
	})
}

// runOnce starts a created process (task or exec), waits for its exit and
// deletes it.
func (b *bench) runOnce(p containerd.Process) error {
	ch, err := p.Wait(b.ctx)
	if err != nil {
		return err
	}
	if err := p.Start(b.ctx); err != nil {
		return err
	}
	<-ch
	_, err = p.Delete(b.ctx)
	return err
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

func (b *bench) ctrRun() error {
	s := b.newSample("`ctr run --rm … true`", "ms", true)
	return b.both(b.cfg.iterations, func(rt string) error {
		t0 := time.Now()
		args := []string{"run", "--rm", "--runtime", rt}
		if b.cfg.binary != "" {
			// ctr takes --runc-binary only for runc-v2; other runtimes get a config file.
			if rt == runtimeA {
				args = append(args, "--runc-binary", b.cfg.binary)
			} else {
				args = append(args, "--runtime-config-path", b.binaryConfig)
			}
		}
		_, stderr, code, err := b.d.Ctr(b.ctx, append(args, harness.ImageName, b.id("ctr"), "true")...)
		if err != nil || code != 0 {
			return fmt.Errorf("ctr run: code %d %v %s", code, err, stderr)
		}
		s.add(rt, ms(time.Since(t0)))
		return nil
	})
}

// execCycle: Exec -> Wait -> Start -> exit -> Delete of `true` in a running container.
func (b *bench) execCycle() error {
	s := b.newSample("exec cycle of `true` (Go client)", "ms", true)
	tasks := map[string]containerd.Task{}
	var execSpec *specs.Process
	for _, rt := range []string{runtimeA, runtimeB} {
		c, task, stop, err := b.sleeper(rt, b.id("exec"))
		if err != nil {
			return err
		}
		defer stop()
		spec, err := c.Spec(b.ctx)
		if err != nil {
			return err
		}
		execSpec = spec.Process
		execSpec.Args = []string{"true"}
		tasks[rt] = task
	}
	return b.both(b.cfg.iterations*2, func(rt string) error {
		t0 := time.Now()
		p, err := tasks[rt].Exec(b.ctx, b.id("e"), execSpec, cio.NullIO)
		if err != nil {
			return err
		}
		if err := b.runOnce(p); err != nil {
			return err
		}
		s.add(rt, ms(time.Since(t0)))
		return nil
	})
}

// exitLatency: the init is SIGKILLed from here at t0; the sample is the time
// until /tasks/exit for it reaches an event subscriber.
func (b *bench) exitLatency() error {
	s := b.newSample("exit -> /tasks/exit received", "ms", true)
	evc, errc := b.client.EventService().Subscribe(b.ctx, `topic=="/tasks/exit"`)
	return b.both(b.cfg.iterations, func(rt string) error {
		c, task, stop, err := b.sleeper(rt, b.id("exit"))
		if err != nil {
			return err
		}
		defer stop()
		time.Sleep(20 * time.Millisecond)
		t0 := time.Now()
		if err := syscall.Kill(int(task.Pid()), syscall.SIGKILL); err != nil {
			return err
		}
		for {
			select {
			case env := <-evc:
				v, err := typeurl.UnmarshalAny(env.Event)
				if err != nil {
					return err
				}
				if e, ok := v.(*apievents.TaskExit); ok && e.ContainerID == c.ID() {
					s.add(rt, ms(time.Since(t0)))
					ch, _ := task.Wait(b.ctx)
					<-ch
					return nil
				}
			case err := <-errc:
				return err
			case <-time.After(30 * time.Second):
				return fmt.Errorf("no /tasks/exit for %s", c.ID())
			}
		}
	})
}

// throughput: a container writes cfg.throughput bytes of zeros to stdout; a
// lean reader here drains the FIFO. Reports MB/s and the shim's CPU seconds
// per GiB moved; then the same through ctr, and the host's one-pipe floor.
func (b *bench) throughput() error {
	mbs := b.newSample(fmt.Sprintf("stdout throughput, %d MiB, lean FIFO reader", b.cfg.throughput>>20), "MB/s", false)
	cpu := b.newSample("shim CPU per GiB of stdout", "CPU-s", true)
	ctrMbs := b.newSample("stdout throughput through `ctr run` (ctr copies)", "MB/s", false)
	count := strconv.FormatInt(b.cfg.throughput>>20, 10)
	dd := []string{"dd", "if=/dev/zero", "bs=1048576", "count=" + count}
	runs := max(2, b.cfg.iterations/5)
	if err := b.both(runs, func(rt string) error {
		id := b.id("tp")
		c, err := b.container(rt, id, dd)
		if err != nil {
			return err
		}
		defer b.remove(c)
		reader := &leanReader{dir: b.d.Base}
		task, err := c.NewTask(b.ctx, reader.creator)
		if err != nil {
			return err
		}
		defer task.Delete(b.ctx)
		shim := b.d.ShimProcesses("", id)
		if len(shim) == 0 {
			return fmt.Errorf("no shim process for %s", id)
		}
		cpu0 := cpuSeconds(shim[0].Pid)
		ch, err := task.Wait(b.ctx)
		if err != nil {
			return err
		}
		t0 := time.Now()
		if err := task.Start(b.ctx); err != nil {
			return err
		}
		n := reader.wait()
		el := time.Since(t0)
		<-ch
		cpu1 := cpuSeconds(shim[0].Pid)
		if n != b.cfg.throughput {
			return fmt.Errorf("read %d bytes, want %d", n, b.cfg.throughput)
		}
		mbs.add(rt, float64(n)/1e6/el.Seconds())
		cpu.add(rt, (cpu1-cpu0)/(float64(n)/(1<<30)))
		return nil
	}); err != nil {
		return err
	}
	if err := b.both(1, func(rt string) error {
		cmd := b.d.CtrCmd(b.ctx, append([]string{"run", "--rm", "--runtime", rt, harness.ImageName, b.id("ctrtp")}, dd...)...)
		cmd.Stdout = io.Discard
		t0 := time.Now()
		if err := cmd.Run(); err != nil {
			return err
		}
		ctrMbs.add(rt, float64(b.cfg.throughput)/1e6/time.Since(t0).Seconds())
		return nil
	}); err != nil {
		return err
	}
	// The floor: the same bytes through one host pipe into the same reader.
	cmd := exec.Command("dd", "if=/dev/zero", "bs=1048576", "count="+count)
	pr, pw, _ := os.Pipe()
	cmd.Stdout = pw
	cmd.Stderr = io.Discard
	t0 := time.Now()
	if err := cmd.Start(); err != nil {
		return err
	}
	pw.Close()
	n := drain(pr)
	_ = cmd.Wait()
	b.notes = append(b.notes, fmt.Sprintf("One host pipe hop (dd | lean reader), same %d MiB: %.0f MB/s.", n>>20, float64(n)/1e6/time.Since(t0).Seconds()))
	return nil
}

// idleMemory: one shim per runtime holding one idle container.
func (b *bench) idleMemory() error {
	rss := b.newSample("idle shim with 1 container: RSS", "KiB", true)
	uss := b.newSample("idle shim with 1 container: private (USS)", "KiB", true)
	anon := b.newSample("idle shim with 1 container: anonymous memory", "KiB", true)
	return b.both(1, func(rt string) error {
		id := b.id("idle")
		_, _, stop, err := b.sleeper(rt, id)
		if err != nil {
			return err
		}
		defer stop()
		time.Sleep(3 * time.Second) // settle (our shim trims its memory after 1 s)
		shim := b.d.ShimProcesses("", id)
		if len(shim) == 0 {
			return fmt.Errorf("no shim for %s", id)
		}
		m := smapsRollup(shim[0].Pid)
		rss.add(rt, m["Rss"])
		uss.add(rt, m["Private_Clean"]+m["Private_Dirty"])
		anon.add(rt, m["Anonymous"])
		return nil
	})
}

// podMemory: N containers grouped into one shim by the CRI sandbox
// annotation; time to create and start them all, and the shim's memory.
func (b *bench) podMemory() error {
	perExtra := b.newSample(fmt.Sprintf("pod shim: RSS per extra container (%d -> %d)", b.cfg.podSizes[0], b.cfg.podSizes[1]), "KiB", true)
	anonPerExtra := b.newSample(fmt.Sprintf("pod shim: anonymous memory per extra container (%d -> %d)", b.cfg.podSizes[0], b.cfg.podSizes[1]), "KiB", true)
	rssBySize := map[int]*sample{}
	startBySize := map[int]*sample{}
	for _, n := range b.cfg.podSizes {
		rssBySize[n] = b.newSample(fmt.Sprintf("pod shim with %d containers: RSS", n), "KiB", true)
		startBySize[n] = b.newSample(fmt.Sprintf("start %d containers in one pod (sequential)", n), "ms", true)
	}
	return b.both(1, func(rt string) error {
		pod := b.id("pod")
		rssAt, anonAt := map[int]float64{}, map[int]float64{}
		var ctrs []containerd.Container
		var stops []func()
		defer func() {
			for _, stop := range stops {
				stop()
			}
		}()
		t0 := time.Now()
		for _, n := range b.cfg.podSizes {
			for len(ctrs) < n {
				c, _, stop, err := b.sleeper(rt, b.id(pod),
					oci.WithAnnotations(map[string]string{"io.kubernetes.cri.sandbox-id": pod}))
				if err != nil {
					return err
				}
				ctrs, stops = append(ctrs, c), append(stops, stop)
			}
			startBySize[n].add(rt, ms(time.Since(t0)))
			time.Sleep(3 * time.Second)
			shims := b.d.ShimProcesses("", "")
			var pid int
			for _, s := range shims {
				if strings.Contains(strings.Join(s.Args, " "), "-id "+ctrs[0].ID()) {
					pid = s.Pid
				}
			}
			if pid == 0 {
				return fmt.Errorf("pod shim not found")
			}
			m := smapsRollup(pid)
			rssAt[n], anonAt[n] = m["Rss"], m["Anonymous"]
			rssBySize[n].add(rt, rssAt[n])
			t0 = time.Now().Add(-time.Duration(startBySize[n].last(rt) * float64(time.Millisecond)))
		}
		lo, hi := b.cfg.podSizes[0], b.cfg.podSizes[1]
		perExtra.add(rt, (rssAt[hi]-rssAt[lo])/float64(hi-lo))
		anonPerExtra.add(rt, (anonAt[hi]-anonAt[lo])/float64(hi-lo))
		return nil
	})
}

func (s *sample) last(rt string) float64 {
	v := s.b
	if rt == runtimeA {
		v = s.a
	}
	return v[len(v)-1]
}

// leanReader is a cio.Creator whose stdout is drained by one loop reading
// 1 MiB at a time, so that the shim, not the reader, is what is measured.
type leanReader struct {
	dir  string
	set  *cio.FIFOSet
	done chan int64
}

func (l *leanReader) creator(id string) (cio.IO, error) {
	fifos, err := cio.NewFIFOSetInDir(filepath.Join(l.dir, "fifo"), id, false)
	if err != nil {
		return nil, err
	}
	// The stock shim needs stdout and stderr both set (or neither).
	fifos.Stdin = ""
	l.set, l.done = fifos, make(chan int64, 1)
	for _, p := range []string{fifos.Stdout, fifos.Stderr} {
		if err := syscall.Mkfifo(p, 0o600); err != nil {
			return nil, err
		}
	}
	go func() {
		if f, err := os.OpenFile(fifos.Stderr, os.O_RDONLY, 0); err == nil {
			drain(f)
			f.Close()
		}
	}()
	go func() {
		// A blocking open returns once the shim has opened its end.
		f, err := os.OpenFile(fifos.Stdout, os.O_RDONLY, 0)
		if err != nil {
			l.done <- -1
			return
		}
		l.done <- drain(f)
		f.Close()
	}()
	return &leanIO{cfg: fifos.Config, set: fifos}, nil
}

func (l *leanReader) wait() int64 { return <-l.done }

type leanIO struct {
	cfg cio.Config
	set *cio.FIFOSet
}

func (l *leanIO) Config() cio.Config { return l.cfg }
func (l *leanIO) Cancel()            {}
func (l *leanIO) Wait()              {}
func (l *leanIO) Close() error       { return l.set.Close() }

func drain(f *os.File) int64 {
	buf := make([]byte, 1<<20)
	var n int64
	for {
		m, err := f.Read(buf)
		n += int64(m)
		if err != nil {
			return n
		}
	}
}

func cpuSeconds(pid int) float64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	f := strings.Fields(string(data[strings.LastIndexByte(string(data), ')')+2:]))
	ut, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return (ut + st) / 100 // USER_HZ
}

func smapsRollup(pid int) map[string]float64 {
	out := map[string]float64{}
	f, err := os.Open(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	if err != nil {
		return out
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		fields := strings.Fields(v)
		if len(fields) > 0 {
			out[k], _ = strconv.ParseFloat(fields[0], 64)
		}
	}
	return out
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func stats(v []float64) (med, lo, hi float64) {
	if len(v) == 0 {
		return 0, 0, 0
	}
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	m := s[len(s)/2]
	if len(s)%2 == 0 {
		m = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return m, s[0], s[len(s)-1]
}

func (b *bench) report(took time.Duration) string {
	var sb strings.Builder
	host, _ := os.Hostname()
	kernel, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	mode := "full"
	if b.cfg.quick {
		mode = "quick"
	}
	fmt.Fprintf(&sb, "## Benchmark (%s), %s\n\n", mode, time.Now().UTC().Format("2006-01-02 15:04 MST"))
	cmd := "go run ./cmd/bench"
	if b.cfg.quick {
		cmd += " -quick"
	}
	cmd += " -flavor " + b.cfg.flavor
	rtVersion := runcVersion()
	if b.cfg.binary != "" {
		cmd += " -runtime-binary " + b.cfg.binary
		rtVersion = binaryVersion(b.cfg.binary)
	}
	fmt.Fprintf(&sb, "Command: `cd integration && %s`  \n", cmd)
	fmt.Fprintf(&sb, "Machine: %s, %d cores, kernel %s, containerd %s, %s; took %s.  \n", host, runtime.NumCPU(), strings.TrimSpace(string(kernel)), b.cfg.flavor, rtVersion, took.Round(time.Second))
	fmt.Fprintf(&sb, "A = `%s` (containerd's stock shim), B = `%s` (this shim); runs alternate A/B. Ratio = B/A (lower is better for times, CPU and memory; higher for throughput).\n\n", runtimeA, runtimeB)
	fmt.Fprintf(&sb, "| measure | unit | A median (min–max) | B median (min–max) | B/A |\n|---|---|---|---|---|\n")
	for _, s := range b.results {
		am, alo, ahi := stats(s.a)
		bm, blo, bhi := stats(s.b)
		ratio := "–"
		if am != 0 {
			ratio = fmt.Sprintf("%.2f", bm/am)
		}
		fmt.Fprintf(&sb, "| %s | %s | %s (%s–%s) | %s (%s–%s) | %s |\n", s.name, s.unit, num(am), num(alo), num(ahi), num(bm), num(blo), num(bhi), ratio)
	}
	for _, n := range b.notes {
		fmt.Fprintf(&sb, "\n%s\n", n)
	}
	return sb.String()
}

func num(v float64) string {
	switch {
	case v >= 100:
		return fmt.Sprintf("%.0f", v)
	case v >= 10:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.2f", v)
	}
}

func runcVersion() string { return binaryVersion("runc") }

// binaryVersion is the first line of `<binary> --version`.
func binaryVersion(binary string) string {
	out, err := exec.Command(binary, "--version").Output()
	if err != nil {
		return binary + " ?"
	}
	return strings.SplitN(string(out), "\n", 2)[0]
}
