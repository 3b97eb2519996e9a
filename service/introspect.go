package service

import (
	"bufio"
	"context"
	"fmt"
	"maps"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/containerd/errdefs/pkg/errgrpc"

	"github.com/example/containerd-shim-example-v2/events"
	"github.com/example/containerd-shim-example-v2/internal/ttrpcclient"
	"github.com/example/containerd-shim-example-v2/process"
	introspect "github.com/example/containerd-shim-example-v2/proto/introspect/v1"
)

// Snapshot asks the daemon serving socket for its introspection snapshot:
// the client side, for the `introspect` and `upgrade` commands.
func Snapshot(ctx context.Context, socket string) (*introspect.SnapshotResponse, error) {
	c, err := ttrpcclient.Dial(ctx, socket)
	if err != nil {
		return nil, fmt.Errorf("connect to shim %s: %w", socket, err)
	}
	defer c.Close()
	var resp introspect.SnapshotResponse
	if err := c.Call(ctx, IntrospectService, "Snapshot", &introspect.SnapshotRequest{}, &resp); err != nil {
		return nil, errgrpc.ToNative(err)
	}
	return &resp, nil
}

// eventStats is what a Publisher that can report on itself offers
// (events.Queue does).
type eventStats interface {
	Stats() events.Stats
}

// Introspect answers the introspection service (proto/introspect/v1): the
// daemon's build, memory and event queue, and each process's output
// counters. It only reads; like State, it waits for a process being started.
func (s *Service) Introspect(ctx context.Context, _ *introspect.SnapshotRequest) (*introspect.SnapshotResponse, error) {
	// Running before the count: a warming counts itself before it stops
	// running, so "not running" and then the count include every warming
	// that has ended.
	warming := s.cfg.Warmer.Running()
	resp := &introspect.SnapshotResponse{
		Pid:       s.shimPid,
		Version:   s.cfg.Version,
		Revision:  s.cfg.Revision,
		Namespace: s.cfg.Namespace,
		Events:    &introspect.EventQueue{},
		Memory:    memorySnapshot(),
		// The pod service's warmings share the same warmer.
		CgroupWarmings:       s.cfg.Warmer.Warmed(),
		CgroupWarmingRunning: warming,
		ExpectedTasks:        slices.Sorted(maps.Keys(s.cfg.Gate.Expecting())),
	}
	if r := s.cfg.Reaper; r != nil {
		pids, windows := r.Watched()
		resp.Reaper = &introspect.Reaper{Watched: uint32(pids), LaunchWindows: uint32(windows), Orphans: r.Orphans()}
	}
	if !s.cfg.Started.IsZero() {
		resp.UptimeMs = uint64(time.Since(s.cfg.Started).Milliseconds())
	}
	if q, ok := s.cfg.Events.(eventStats); ok {
		st := q.Stats()
		resp.Events = &introspect.EventQueue{
			Pending:         st.Pending,
			Forwarded:       st.Forwarded,
			Retries:         st.Retries,
			Dropped:         st.Dropped,
			OldestPendingMs: uint64(st.OldestPending.Milliseconds()),
		}
	}
	if s.cfg.Upgrade != nil {
		resp.Upgrade = s.cfg.Upgrade()
	}
	for _, c := range s.list() {
		t := &introspect.Task{Id: c.ID, Bundle: c.Bundle}
		t.OomKills, t.LastOomScope = c.OOMInfo()
		for _, p := range append([]*process.Process{c.Init()}, c.Execs()...) {
			t.Processes = append(t.Processes, processSnapshot(p))
		}
		resp.Tasks = append(resp.Tasks, t)
	}
	return resp, nil
}

func processSnapshot(p *process.Process) *introspect.Process {
	st := p.State()
	out := p.Output()
	return &introspect.Process{
		ExecId:            p.ID,
		Pid:               uint32(st.Pid),
		Status:            st.Status.String(),
		ExitStatus:        uint32(st.ExitCode),
		Terminal:          out.Terminal,
		OutputBytes:       out.Delivered,
		DroppedBytes:      out.Dropped,
		QueuedBytes:       out.Queued,
		ClientQueuedBytes: out.ClientQueued,
	}
}

// memorySnapshot reads the daemon's resident memory from the kernel and its
// heap from the Go runtime (a brief stop of the world, fine on request).
func memorySnapshot() *introspect.Memory {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	m := &introspect.Memory{
		HeapInuseBytes: ms.HeapInuse,
		HeapSysBytes:   ms.HeapSys,
		Goroutines:     uint32(runtime.NumGoroutine()),
	}
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return m
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		key, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		kib, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
		if err != nil {
			continue
		}
		switch key {
		case "VmRSS":
			m.RssKib = kib
		case "RssAnon":
			m.AnonKib = kib
		}
	}
	return m
}
