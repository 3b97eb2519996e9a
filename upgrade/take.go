package upgrade

import (
	"encoding/json"
	"fmt"
	"net"
	"time"

	"github.com/example/containerd-shim-example-v2/events"
	"github.com/example/containerd-shim-example-v2/handover"
	"github.com/example/containerd-shim-example-v2/sandbox"
	"github.com/example/containerd-shim-example-v2/service"
)

// Taken is what a daemon takes over from the binary that executed it.
type Taken struct {
	st   state
	from handover.Build
}

// Take reads the handed-over state (handover.EnvFD's value). A layout this
// binary cannot read is refused; the preflight should have prevented that.
func Take(fdText string) (*Taken, error) {
	env, err := handover.ReadEnvelope(fdText)
	if err != nil {
		return nil, err
	}
	t := &Taken{from: env.From}
	if err := json.Unmarshal(env.Body, &t.st); err != nil {
		return nil, fmt.Errorf("handover: decode the daemon's state: %w", err)
	}
	return t, nil
}

// Binary is the path this daemon was executed from: the default binary of
// its own next upgrade.
func (t *Taken) Binary() string { return t.st.Binary }

// Import rebuilds the tasks, the pods and the undelivered events. Call it
// before the reaper and the queue run.
func (t *Taken) Import(q *events.Queue, svc *service.Service, pods *sandbox.Service) error {
	if err := q.Import(t.st.Events); err != nil {
		return err
	}
	if err := svc.Import(t.st.Service, handover.Adopt); err != nil {
		return err
	}
	return pods.Import(t.st.Pods, handover.Adopt)
}

// Listener rebuilds the listening socket with the connections containerd
// (and others) had open: they are served first, with what was read of them.
func (t *Taken) Listener() (*handover.Listener, error) {
	var conns []net.Conn
	for _, cs := range t.st.Conns {
		c, err := handover.ImportConn(cs)
		if err != nil {
			return nil, err
		}
		conns = append(conns, c)
	}
	return handover.ImportListener(t.st.Listener, conns)
}

// Took records the upgrade that made this daemon, once it serves again:
// the pause is from the connections' pause in the predecessor to now.
func (d *Daemon) Took(t *Taken) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.record = record{count: t.st.Upgrades + 1, from: t.from.Version, at: time.Now(), pause: time.Since(t.st.PausedAt)}
}
