package cgroup

import (
	v1 "github.com/example/containerd-shim-example-v2/proto/cgroups/cgroup1/stats"
	v2 "github.com/example/containerd-shim-example-v2/proto/cgroups/cgroup2/stats"
	"github.com/example/containerd-shim-example-v2/proto/codec"
)

// The statistics go to containerd as protobuf bytes in an Any. The messages
// are the mirrors of containerd/cgroups' metrics types (proto/cgroups),
// encoded by the shim's codec: linking cgroups' generated packages would
// register their metrics.proto files at every start-up, and proto.Marshal
// would build a coder for every message in them on the first poll (about
// 115 KB of heap that every shim polled for metrics kept for its life:
// containerd 2.4's CRI asks every pod and container once a second). The
// bytes are proto.Marshal's (the codec's tests compare every type, and
// TestMetricsDecodeWithCgroupsTypes decodes them with cgroups' own).

// Metrics reads the cgroup's statistics (v1 or v2) and encodes them for an
// Any whose type URL it returns along.
func (c *Cgroup) Metrics() (data []byte, typeURL string, err error) {
	if c.V2 {
		m, err := c.StatsV2()
		if err != nil {
			return nil, "", err
		}
		data, err = codec.Marshal(m)
		return data, MetricsV2, err
	}
	m, err := c.StatsV1()
	if err != nil {
		return nil, "", err
	}
	data, err = codec.Marshal(m)
	return data, MetricsV1, err
}

// MetricsOfRemoved encodes what is left of a cgroup removed while its
// container still exists (systemd removes a scope as soon as it is empty),
// kills being the kills reported for it. Under v2: the memory events last
// read (events, nil if none was) with oom_kill raised to kills; under v1
// (which keeps its count in memory.oom_control, and whose events are not
// kept): oom_kill alone. Nothing else is known of it. containerd 2.x's CRI
// asks for these at a 137 exit to tell an OOM kill whose event it has not
// handled yet, and reads oom_kill of either version.
func (c *Cgroup) MetricsOfRemoved(events map[string]uint64, kills uint64) (data []byte, typeURL string, err error) {
	if !c.V2 {
		data, err = codec.Marshal(&v1.Metrics{MemoryOomControl: &v1.MemoryOomControl{OomKill: kills}})
		return data, MetricsV1, err
	}
	ev := &v2.MemoryEvents{}
	for k, v := range events {
		if f := memoryEventField(ev, []byte(k)); f != nil {
			*f = v
		}
	}
	ev.OomKill = max(ev.OomKill, kills)
	data, err = codec.Marshal(&v2.Metrics{MemoryEvents: ev})
	return data, MetricsV2, err
}
