package service

import "time"

// stallTimeoutFor is the output stall timeout (as shimio.Env takes it: 0 the
// default, negative never) of the tasks of a daemon in namespace ns, given
// the one the runtime options configure (0: none).
//
// Docker Engine (namespaces "moby" and "plugins.moby") gets no timeout
// unless one is configured. dockerd is the one reader of its containers'
// FIFOs and copies them into the log driver and every attached client at
// the pace of the slowest, so a stall there is a client that stopped reading
// (a suspended terminal), not a dead reader; discarding would cost
// `docker logs` the lines too. Docker has its own answer for a slow log
// (`--log-opt mode=non-blocking`, which keeps dockerd reading), and its
// users expect the container to block otherwise, as under the stock shim.
func stallTimeoutFor(ns string, configured time.Duration) time.Duration {
	if configured != 0 {
		return configured
	}
	switch ns {
	case "moby", "plugins.moby":
		return -1
	}
	return 0
}
