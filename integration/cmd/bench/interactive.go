package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/oci"

	"github.com/example/containerd-shim-example-v2/integration/harness"
)

// Interactive latency: the benchmark writes a payload into a container's
// stdin and times until `cat` has echoed all of it back on stdout, through
// the client's FIFOs (and, in the terminal mode, through the container's pty
// in raw mode). The floor is the same round trip through two host pipes and
// the same busybox `cat`.

var echoSizes = []int{8, 4 << 10, 64 << 10}

// echoRoundTrips is how many round trips each size gets (big ones fewer).
func (b *bench) echoRoundTrips(size int) int {
	if size >= 64<<10 {
		return max(20, b.cfg.roundTrips/2)
	}
	return b.cfg.roundTrips
}

// echoBlock is how many round trips one shim makes before the other's turn.
const echoBlock = 20

// echoTimeout bounds one round trip (a lost byte must not hang the run).
const echoTimeout = 10 * time.Second

func sizeName(n int) string {
	if n >= 1<<10 {
		return fmt.Sprintf("%d KiB", n>>10)
	}
	return fmt.Sprintf("%d B", n)
}

func (b *bench) interactive() error {
	for _, tty := range []bool{false, true} {
		mode, label := "fifo", "FIFOs"
		if tty {
			mode, label = "tty", "tty (raw)"
		}
		conns := map[string]*echoConn{}
		for _, rt := range []string{runtimeA, runtimeB} {
			e, err := b.startEcho(rt, tty)
			if err != nil {
				return fmt.Errorf("%s %s echo container: %w", rt, mode, err)
			}
			defer e.stop()
			conns[rt] = e
		}
		// Measure shims at rest, as a session a user types into is: past
		// the work of starting the container (our shim trims its memory 2 s
		// after the last request).
		time.Sleep(settleTime)
		for _, size := range echoSizes {
			name := fmt.Sprintf("echo round trip %s, stdin → `cat` → stdout, %s", sizeName(size), label)
			p50 := b.newSample(fmt.Sprintf("echo-%s-%d-p50", mode, size), name+": p50", "µs", true)
			p99 := b.newSample(fmt.Sprintf("echo-%s-%d-p99", mode, size), name+": p99", "µs", true)
			p99.pct = 99
			cpu := b.newSample(fmt.Sprintf("echo-%s-%d-cpu", mode, size), name+": shim CPU per round trip", "µs", true)
			payload := pattern(size)
			n := b.echoRoundTrips(size)
			cpuUsed := map[string]time.Duration{}
			if err := b.both((n+echoBlock-1)/echoBlock, func(rt string) error {
				c := conns[rt]
				cpu0 := threadsCPU(c.shim)
				for i := 0; i < echoBlock; i++ {
					d, err := c.roundTrip(payload)
					if err != nil {
						return err
					}
					p50.add(rt, us(d))
					p99.add(rt, us(d))
				}
				cpuUsed[rt] += threadsCPU(c.shim) - cpu0
				return nil
			}); err != nil {
				return err
			}
			for _, rt := range []string{runtimeA, runtimeB} {
				cpu.add(rt, us(cpuUsed[rt])/float64(len(p50.values(rt))))
			}
		}
	}
	return b.echoFloor()
}

// echoFloor: host pipe -> busybox cat -> host pipe.
func (b *bench) echoFloor() error {
	cmd := exec.Command(harness.BusyboxPath, "cat")
	inR, inW, err := os.Pipe()
	if err != nil {
		return err
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		return err
	}
	cmd.Stdin, cmd.Stdout = inR, outW
	if err := cmd.Start(); err != nil {
		return err
	}
	inR.Close()
	outW.Close()
	defer func() { inW.Close(); outR.Close(); _ = cmd.Wait() }()
	e := &echoConn{in: inW, out: outR, buf: make([]byte, 64<<10)}
	for _, size := range echoSizes {
		name := fmt.Sprintf("floor: echo round trip %s, host pipe → busybox `cat` → pipe", sizeName(size))
		p50 := b.newSample(fmt.Sprintf("echo-floor-%d-p50", size), name+": p50", "µs", true)
		p99 := b.newSample(fmt.Sprintf("echo-floor-%d-p99", size), name+": p99", "µs", true)
		p50.floor, p99.floor, p99.pct = true, true, 99
		payload := pattern(size)
		for i := 0; i < b.echoRoundTrips(size); i++ {
			d, err := e.roundTrip(payload)
			if err != nil {
				return err
			}
			p50.a = append(p50.a, us(d))
			p99.a = append(p99.a, us(d))
		}
	}
	return nil
}

// echoConn is one side of an echo container: the benchmark's ends of its
// stdin and stdout FIFOs.
type echoConn struct {
	in, out *os.File
	buf     []byte
	stop    func()
	shim    int // the shim's pid
}

func (e *echoConn) roundTrip(p []byte) (time.Duration, error) {
	_ = e.out.SetReadDeadline(time.Now().Add(echoTimeout))
	t0 := time.Now()
	if _, err := e.in.Write(p); err != nil {
		return 0, err
	}
	n := 0
	for n < len(p) {
		m, err := e.out.Read(e.buf[n:len(p)])
		n += m
		if err != nil {
			return 0, fmt.Errorf("echo: read %d of %d bytes: %w", n, len(p), err)
		}
	}
	d := time.Since(t0)
	if !bytes.Equal(e.buf[:n], p) {
		return 0, fmt.Errorf("echo: got back different bytes")
	}
	return d, nil
}

// startEcho runs `cat` in a container whose stdio are FIFOs the benchmark
// opens itself (read-write, so opening never waits for the shim).
func (b *bench) startEcho(rt string, tty bool) (*echoConn, error) {
	id := b.id("echo")
	args := []string{"cat"}
	var opts []oci.SpecOpts
	if tty {
		// Raw mode: no echo, no line editing, no output processing.
		args = []string{"sh", "-c", "stty raw -echo && echo READY && exec cat"}
		opts = append(opts, oci.WithTTY)
	}
	c, err := b.container(rt, id, args, opts...)
	if err != nil {
		return nil, err
	}
	var files []*os.File
	cleanup := func() {
		for _, f := range files {
			f.Close()
		}
		b.remove(c)
	}
	cfg := cio.Config{Terminal: tty}
	paths := map[string]*string{"stdin": &cfg.Stdin, "stdout": &cfg.Stdout}
	if !tty {
		paths["stderr"] = &cfg.Stderr // the stock shim wants both output streams or neither
	}
	opened := map[string]*os.File{}
	for name, p := range paths {
		*p = filepath.Join(b.fifoDir(), id+"-"+name)
		if err := syscall.Mkfifo(*p, 0o600); err != nil {
			cleanup()
			return nil, err
		}
		f, err := os.OpenFile(*p, os.O_RDWR, 0)
		if err != nil {
			cleanup()
			return nil, err
		}
		files = append(files, f)
		opened[name] = f
	}
	task, err := c.NewTask(b.ctx, func(string) (cio.IO, error) { return &fixedIO{cfg: cfg}, nil })
	if err != nil {
		cleanup()
		return nil, err
	}
	e := &echoConn{in: opened["stdin"], out: opened["stdout"], buf: make([]byte, 64<<10)}
	if e.shim, err = b.shimPid("", id); err != nil {
		_, _ = task.Delete(b.ctx, containerd.WithProcessKill)
		cleanup()
		return nil, err
	}
	e.stop = func() {
		_, _ = task.Delete(b.ctx, containerd.WithProcessKill)
		cleanup()
		for _, p := range paths {
			os.Remove(*p)
		}
	}
	if err := task.Start(b.ctx); err != nil {
		e.stop()
		return nil, err
	}
	if tty {
		if err := e.expect([]byte("READY\n")); err != nil {
			e.stop()
			return nil, err
		}
	}
	for i := 0; i < 10; i++ { // warm up
		if _, err := e.roundTrip(pattern(8)); err != nil {
			e.stop()
			return nil, err
		}
	}
	return e, nil
}

// expect reads exactly want from the output.
func (e *echoConn) expect(want []byte) error {
	_ = e.out.SetReadDeadline(time.Now().Add(echoTimeout))
	got := make([]byte, 0, len(want))
	for len(got) < len(want) {
		m, err := e.out.Read(e.buf[:len(want)-len(got)])
		got = append(got, e.buf[:m]...)
		if err != nil {
			return fmt.Errorf("waiting for %q: got %q: %w", want, got, err)
		}
	}
	if !bytes.Equal(got, want) {
		return fmt.Errorf("waiting for %q: got %q", want, got)
	}
	return nil
}

func pattern(n int) []byte {
	p := make([]byte, n)
	for i := range p {
		p[i] = 'a' + byte(i%26)
	}
	return p
}

func us(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e3 }

// fixedIO is a cio.IO of FIFOs the caller manages.
type fixedIO struct{ cfg cio.Config }

func (f *fixedIO) Config() cio.Config { return f.cfg }
func (f *fixedIO) Cancel()            {}
func (f *fixedIO) Wait()              {}
func (f *fixedIO) Close() error       { return nil }

// threadsCPU is the CPU time all of a process's threads have used, from
// /proc/<pid>/task/*/schedstat (nanoseconds, where /proc/<pid>/stat counts
// in 10 ms ticks).
func threadsCPU(pid int) time.Duration {
	tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	var total int64
	for _, t := range tasks {
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/schedstat", pid, t.Name()))
		if err != nil {
			continue
		}
		var ns int64
		if _, err := fmt.Sscan(string(data), &ns); err == nil {
			total += ns
		}
	}
	return time.Duration(total)
}
