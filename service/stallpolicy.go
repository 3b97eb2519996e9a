package service

import (
	"time"

	shimio "github.com/example/containerd-shim-example-v2/io"
	"github.com/example/containerd-shim-example-v2/process"
)

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

// importedStallTimeout gives a container handed over by an in-place upgrade
// its namespace's default stall timeout when the binary before did not
// (one older than Docker's default: its state says 0, not configured, and
// its processes' relays carry the default it used). Without it a Docker
// container kept discarding a stalled reader's output after the upgrade
// that was to bring the change, in its running processes and in every exec
// started afterwards. A timeout the options set, or one the binary before
// chose for the namespace, is not 0 and stays. Layouts 1 to 4 record the
// container's as 0 even when the options set one; a relay carrying a value
// other than the old default carries that one, and the execs to come get it
// too (a configured timeout equal to the old default cannot be told apart,
// and becomes the namespace's).
func importedStallTimeout(cs *process.ContainerState) {
	if cs.StallTimeout != 0 {
		return
	}
	t := stallTimeoutFor(cs.Namespace, 0)
	if t == 0 {
		return
	}
	pipes := append([]*shimio.PipesState{cs.Init.Pipes}, execPipes(cs)...)
	for _, ps := range pipes {
		if ps != nil && ps.StallTimeout != 0 && ps.StallTimeout != shimio.DefaultStallTimeout {
			cs.StallTimeout = ps.StallTimeout // configured: relays and execs keep it
			return
		}
	}
	cs.StallTimeout = t
	// The processes' relays: theirs was the old default, the option
	// being unset.
	for _, ps := range pipes {
		if ps != nil {
			ps.StallTimeout = t
		}
	}
}

// execPipes lists the stdio state of a handed-over container's execs.
func execPipes(cs *process.ContainerState) []*shimio.PipesState {
	ps := make([]*shimio.PipesState, len(cs.Execs))
	for i := range cs.Execs {
		ps[i] = cs.Execs[i].Pipes
	}
	return ps
}
