package upgrade

import (
	"fmt"

	"github.com/example/containerd-shim-example-v2/handover"
	shimio "github.com/example/containerd-shim-example-v2/io"
	"github.com/example/containerd-shim-example-v2/process"
)

// layoutNeeded is the oldest layout st can be written in: the state of
// handover.OldestWrittenVersion, unless st holds something that only a
// newer layout carries; then the newest such layout, and what the thing is
// (for the refusal of a successor that cannot read it). Each layout after
// OldestWrittenVersion adds its rule here, but layouts 10 to 13: their
// exited-session records (process.ContainerState.ExitedSessions) are no
// reason to refuse an older build, which drops them and then tracks those
// processes as it always did (not at all); a refusal would last as long as
// the processes, which may be daemons. Nor is a logger's group to watch
// (io.LoggerEndsState.Group): an older build drops it and holds the pipes
// for the logger's child without draining them, as for a logger that
// daemonized, for as long as the child may run. Nor are layout 12's memory
// events and OOM marks of a container (process.ContainerState.OOMEvents,
// OOMParent, ...): an older build drops them and answers Stats of a cgroup
// systemd removed, and misses a kill during the switch of an init whose
// scope systemd removed, as it always did; and they are there for nearly
// every container under systemd's driver, so a refusal would hold every
// downgrade back. The kernel's log that goes with them
// (service.State.OOMLog) is left out for such a build (dropUnread). Nor is
// layout 13's CRIU binary of a container (process.RuntimeState.Criu): an
// older build drops it and checkpoints with the criu its PATH finds, as it
// always did. Nor is layout 14's FIFO whose output waits for its client's
// next reader (io.PipesState.Lingering): an older build is not given it
// (dropUnread), and those bytes are lost at the switch, as they always were.
func layoutNeeded(st *state) (int, string) {
	need, why := handover.OldestWrittenVersion, ""
	raise := func(v int, what string) {
		if v > need {
			need, why = v, what
		}
	}
	for _, c := range st.Service.Containers {
		if c.Init.Status == process.Created {
			// Layout 8: a binary of 7 takes such an init for one that never
			// ran, claiming no exit and watching no cgroup.
			raise(8, c.ID+" is created and not started")
		}
		for _, p := range append([]process.ProcessState{c.Init}, c.Execs...) {
			if p.Pipes == nil {
				continue
			}
			name := c.ID
			if p.ID != "" && p.ID != c.ID {
				name += " exec " + p.ID
			}
			if t := p.Pipes.Terminal; t != nil && t.Log != nil {
				raise(8, name+"'s terminal writes to a log or a logger") // TerminalState.Log
			}
			for _, o := range p.Pipes.Outputs {
				if o.Plain {
					raise(9, fmt.Sprintf("%s's %s goes to a plain file", name, o.Stream)) // OutputState.Plain
				}
			}
		}
	}
	return need, why
}

// dropUnread leaves out of st, written as layout, what holds a descriptor
// and that layout does not carry: the successor would drop the field and
// keep the descriptor open, without close-on-exec, in every child it
// starts. Layout 12's kernel log (service.State.OOMLog): an older build
// opens its own. Layout 14's lingering FIFOs (io.PipesState.Lingering): an
// older build closed such a FIFO at the stream's end.
func dropUnread(st *state, layout int, fds *handover.FDs) {
	if layout < 12 && st.Service.OOMLog != nil {
		fds.Drop(st.Service.OOMLog.FD)
		st.Service.OOMLog = nil
	}
	if layout < 14 {
		for i := range st.Service.Containers {
			c := &st.Service.Containers[i]
			dropLingering(c.Init.Pipes, fds)
			for j := range c.Execs {
				dropLingering(c.Execs[j].Pipes, fds)
			}
		}
	}
}

// dropLingering leaves out the lingering FIFOs of one process's stdio.
func dropLingering(p *shimio.PipesState, fds *handover.FDs) {
	if p == nil {
		return
	}
	for _, l := range p.Lingering {
		fds.Drop(l.FIFO)
		fds.Drop(l.Handle)
	}
	p.Lingering = nil
}
