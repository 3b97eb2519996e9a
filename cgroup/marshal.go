package cgroup

import (
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
