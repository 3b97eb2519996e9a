package upgrade

import (
	"fmt"

	"github.com/example/containerd-shim-example-v2/handover"
	"github.com/example/containerd-shim-example-v2/process"
)

// layoutNeeded is the oldest layout st can be written in: the state of
// handover.OldestWrittenVersion, unless st holds something that only a
// newer layout carries; then that layout, and what the thing is (for the
// refusal of a successor that cannot read it). Each layout after
// OldestWrittenVersion adds its rule here.
func layoutNeeded(st *state) (int, string) {
	for _, c := range st.Service.Containers {
		for _, p := range append([]process.ProcessState{c.Init}, c.Execs...) {
			if p.Pipes == nil {
				continue
			}
			for _, o := range p.Pipes.Outputs {
				if o.Plain { // layout 9
					name := c.ID
					if p.ID != "" && p.ID != c.ID {
						name += " exec " + p.ID
					}
					return 9, fmt.Sprintf("%s's %s goes to a plain file", name, o.Stream)
				}
			}
		}
	}
	return handover.OldestWrittenVersion, ""
}
