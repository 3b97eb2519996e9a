package main

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/containerd/containerd/v2/pkg/oci"

	"github.com/example/containerd-shim-example-v2/integration/harness"
)

// settleTime lets a shim reach its idle state (ours trims its memory 2 s
// after the last request).
const settleTime = 3 * time.Second

// idleMemory: one shim per runtime holding one idle container.
func (b *bench) idleMemory() error {
	rss := b.newSample("idle-rss", "idle shim with 1 container: RSS", "KiB", true)
	uss := b.newSample("idle-uss", "idle shim with 1 container: private (USS)", "KiB", true)
	anon := b.newSample("idle-anon", "idle shim with 1 container: anonymous memory", "KiB", true)
	threads := b.newSample("idle-threads", "idle shim with 1 container: threads", "", true)
	return b.both(1, func(rt string) error {
		id := b.id("idle")
		_, _, stop, err := b.sleeper(rt, id)
		if err != nil {
			return err
		}
		defer stop()
		time.Sleep(settleTime)
		pid, err := b.shimPid("", id)
		if err != nil {
			return err
		}
		m := smapsRollup(pid)
		rss.add(rt, m["Rss"])
		uss.add(rt, m["Private_Clean"]+m["Private_Dirty"])
		anon.add(rt, m["Anonymous"])
		threads.add(rt, float64(threadCount(pid)))
		return nil
	})
}

// podMemory: containers grouped into one shim by the CRI sandbox annotation,
// started one after the other (memory at both pod sizes, so the cost of each
// extra container) and, in another pod, podWorkers at a time.
func (b *bench) podMemory() error {
	lo, hi := b.cfg.podSizes[0], b.cfg.podSizes[1]
	seqLo := b.newSample("pod-seq-start-lo", fmt.Sprintf("start %d containers in one pod (sequential)", lo), "ms", true)
	seqHi := b.newSample("pod-seq-start", fmt.Sprintf("start %d containers in one pod (sequential)", hi), "ms", true)
	rssLo := b.newSample("pod-rss-lo", fmt.Sprintf("pod shim with %d containers: RSS", lo), "KiB", true)
	rssHi := b.newSample("pod-rss", fmt.Sprintf("pod shim with %d containers: RSS", hi), "KiB", true)
	anonHi := b.newSample("pod-anon", fmt.Sprintf("pod shim with %d containers: anonymous memory", hi), "KiB", true)
	perExtra := b.newSample("pod-rss-per-ctr", fmt.Sprintf("pod shim: RSS per extra container (%d -> %d)", lo, hi), "KiB", true)
	anonPerExtra := b.newSample("pod-anon-per-ctr", fmt.Sprintf("pod shim: anonymous memory per extra container (%d -> %d)", lo, hi), "KiB", true)
	// Threads at both sizes: each costs a signal stack and a g0 stack, so a
	// thread more at one size than at the other moves the per-container rows.
	threadsLo := b.newSample("pod-threads-lo", fmt.Sprintf("pod shim with %d containers: threads", lo), "", true)
	threadsHi := b.newSample("pod-threads", fmt.Sprintf("pod shim with %d containers: threads", hi), "", true)
	conc := b.newSample("pod-conc-start", fmt.Sprintf("start %d containers in one pod (%d at a time)", hi, b.cfg.podWorkers), "ms", true)
	concRss := b.newSample("pod-conc-rss", fmt.Sprintf("pod shim with %d containers started %d at a time: RSS", hi, b.cfg.podWorkers), "KiB", true)
	concAnon := b.newSample("pod-conc-anon", fmt.Sprintf("pod shim with %d containers started %d at a time: anonymous memory", hi, b.cfg.podWorkers), "KiB", true)

	if err := b.both(b.cfg.podRounds, func(rt string) error {
		p := b.newPod(rt)
		defer p.stopAll()
		t0 := time.Now()
		if err := p.start(lo, 1); err != nil {
			return err
		}
		seqLo.add(rt, ms(time.Since(t0)))
		time.Sleep(settleTime)
		mLo, err := p.memory()
		if err != nil {
			return err
		}
		t1 := time.Now()
		if err := p.start(hi, 1); err != nil {
			return err
		}
		seqHi.add(rt, seqLo.last(rt)+ms(time.Since(t1)))
		time.Sleep(settleTime)
		mHi, err := p.memory()
		if err != nil {
			return err
		}
		threadsLo.add(rt, mLo["threads"])
		threadsHi.add(rt, mHi["threads"])
		rssLo.add(rt, mLo["Rss"])
		rssHi.add(rt, mHi["Rss"])
		anonHi.add(rt, mHi["Anonymous"])
		perExtra.add(rt, (mHi["Rss"]-mLo["Rss"])/float64(hi-lo))
		anonPerExtra.add(rt, (mHi["Anonymous"]-mLo["Anonymous"])/float64(hi-lo))
		return nil
	}); err != nil {
		return err
	}
	return b.both(1, func(rt string) error {
		p := b.newPod(rt)
		defer p.stopAll()
		t0 := time.Now()
		if err := p.start(hi, b.cfg.podWorkers); err != nil {
			return err
		}
		conc.add(rt, ms(time.Since(t0)))
		time.Sleep(settleTime)
		m, err := p.memory()
		if err != nil {
			return err
		}
		concRss.add(rt, m["Rss"])
		concAnon.add(rt, m["Anonymous"])
		return nil
	})
}

// pod is a set of sleeper containers one shim serves.
type pod struct {
	b     *bench
	rt    string
	id    string
	mu    sync.Mutex
	ids   map[string]bool // its containers (one of them names the shim)
	stops []func()
}

func (b *bench) newPod(rt string) *pod {
	return &pod{b: b, rt: rt, id: b.id("pod"), ids: map[string]bool{}}
}

// start brings the pod to n containers, workers at a time.
func (p *pod) start(n, workers int) error {
	p.mu.Lock()
	todo := n - len(p.stops)
	ids := make([]string, todo)
	for i := range ids {
		ids[i] = p.b.id(p.id)
	}
	p.mu.Unlock()
	work := make(chan string)
	errs := make(chan error, workers)
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for id := range work {
				_, task, stop, err := p.b.sleeper(p.rt, id,
					oci.WithAnnotations(map[string]string{"io.kubernetes.cri.sandbox-id": p.id}))
				if err == nil {
					// Waited on, as CRI waits on every container it starts:
					// each shim then holds a Wait call per container.
					_, err = task.Wait(p.b.ctx)
				}
				if err != nil {
					if stop != nil {
						stop()
					}
					errs <- err
					return
				}
				p.mu.Lock()
				p.ids[id] = true
				p.stops = append(p.stops, stop)
				p.mu.Unlock()
			}
		}()
	}
	var err error
feed:
	for _, id := range ids {
		select {
		case work <- id:
		case err = <-errs:
			break feed
		}
	}
	close(work)
	wg.Wait()
	if err == nil && len(errs) > 0 {
		err = <-errs
	}
	return err
}

// memory reads the pod shim's smaps_rollup, and its thread count as
// "threads".
func (p *pod) memory() (map[string]float64, error) {
	s, err := p.shim()
	if err != nil {
		return nil, err
	}
	m := smapsRollup(s.Pid)
	m["threads"] = float64(threadCount(s.Pid))
	if os.Getenv("BENCH_POD_MEMDEBUG") != "" {
		p.memdebug(s.Pid)
	}
	return m, nil
}

// memdebug asks a memdebug build of the shim (cmd/shim/memdebug.go) for its
// reports, after the measurement, and keeps them per pod size:
// /tmp/example-shim-<pid>-<containers>.*. BENCH_POD_MEMDEBUG=1 turns it on;
// the stock shim ignores the signal only if it has no handler, so use it
// with BASELINE_SHIM.
func (p *pod) memdebug(pid int) {
	if err := syscall.Kill(pid, syscall.SIGUSR2); err != nil {
		return
	}
	time.Sleep(2 * time.Second) // a collection, a heap profile, pagemap reads
	p.mu.Lock()
	n := len(p.stops)
	p.mu.Unlock()
	for _, ext := range []string{"heap", "metrics", "goroutines", "smaps"} {
		from := fmt.Sprintf("/tmp/example-shim-%d.%s", pid, ext)
		_ = os.Rename(from, fmt.Sprintf("/tmp/example-shim-%d-%d.%s", pid, n, ext))
	}
}

// shim finds the pod's shim process. It is named (-id) after the container
// whose start spawned it.
func (p *pod) shim() (harness.Proc, error) {
	for _, s := range p.b.d.ShimProcesses("", "") {
		if p.ids[argAfter(s.Args, "-id")] {
			return s, nil
		}
	}
	return harness.Proc{}, fmt.Errorf("pod shim of %s not found", p.id)
}

// argAfter returns the word after flag in args, or "".
func argAfter(args []string, flag string) string {
	for i, a := range args {
		if a == flag && i+1 < len(args) {
			return args[i+1]
		}
	}
	return ""
}

// stopAll kills and removes every container, a few at a time.
func (p *pod) stopAll() {
	work := make(chan func())
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for stop := range work {
				stop()
			}
		}()
	}
	for _, stop := range p.stops {
		work <- stop
	}
	close(work)
	wg.Wait()
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

func threadCount(pid int) int {
	entries, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	return len(entries)
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
