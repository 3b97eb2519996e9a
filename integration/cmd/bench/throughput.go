package main

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"time"

	"github.com/containerd/containerd/v2/pkg/cio"

	"github.com/example/containerd-shim-example-v2/integration/harness"
)

// throughput: a container writes cfg.throughput bytes of zeros to stdout; a
// lean reader here drains the FIFO. Reports MB/s and the shim's CPU seconds
// per GiB moved; then the same through ctr, and the host's one-pipe floor.
func (b *bench) throughput() error {
	mbs := b.newSample("throughput", fmt.Sprintf("stdout throughput, %d MiB, lean FIFO reader", b.cfg.throughput>>20), "MB/s", false)
	cpu := b.newSample("throughput-cpu", "shim CPU per GiB of stdout", "CPU-s", true)
	ctrMbs := b.newSample("throughput-ctr", "stdout throughput through `ctr run` (ctr copies)", "MB/s", false)
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
		reader := &leanReader{dir: b.fifoDir()}
		task, err := c.NewTask(b.ctx, reader.creator)
		if err != nil {
			return err
		}
		defer task.Delete(b.ctx)
		pid, err := b.shimPid("", id)
		if err != nil {
			return err
		}
		cpu0 := cpuSeconds(pid)
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
		cpu1 := cpuSeconds(pid)
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
		args := []string{"run", "--rm", "--runtime", rt}
		if b.lane.binary != "" {
			if rt == runtimeA {
				args = append(args, "--runc-binary", b.lane.binary)
			} else {
				args = append(args, "--runtime-config-path", b.binaryConfig)
			}
		}
		cmd := b.d.CtrCmd(b.ctx, append(append(args, harness.ImageName, b.id("ctrtp")), dd...)...)
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
	floor := b.newSample("throughput-floor", "floor: the same bytes through one host pipe (dd → lean reader)", "MB/s", false)
	floor.floor = true
	cmd := exec.Command("dd", "if=/dev/zero", "bs=1048576", "count="+count)
	pr, pw, err := os.Pipe()
	if err != nil {
		return err
	}
	cmd.Stdout = pw
	cmd.Stderr = io.Discard
	t0 := time.Now()
	if err := cmd.Start(); err != nil {
		return err
	}
	pw.Close()
	n := drain(pr)
	_ = cmd.Wait()
	floor.a = append(floor.a, float64(n)/1e6/time.Since(t0).Seconds())
	return nil
}

// leanReader is a cio.Creator whose stdout is drained by one loop reading
// 1 MiB at a time, so that the shim, not the reader, is what is measured.
type leanReader struct {
	dir  string
	set  *cio.FIFOSet
	done chan int64
}

func (l *leanReader) creator(id string) (cio.IO, error) {
	fifos, err := cio.NewFIFOSetInDir(l.dir, id, false)
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
