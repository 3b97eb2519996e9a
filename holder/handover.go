package holder

import (
	"os"
	"time"

	"github.com/example/containerd-shim-example-v2/reaper"
)

// State is a running holder as an in-place upgrade of the shim hands it
// over: the holder stays the shim's child; its life pipe's write end goes
// over as a descriptor (-1 once stopped).
type State struct {
	Pid     int       `json:"pid"`
	Started time.Time `json:"started"`
	Life    int       `json:"life"`
}

// Export describes the holder, keeping its life pipe (keep returns the
// descriptor number the next binary will find it at).
func (h *Holder) Export(keep func(*os.File) (int, error)) (State, error) {
	st := State{Pid: h.Pid, Started: h.Started, Life: -1}
	if h.life != nil {
		fd, err := keep(h.life)
		if err != nil {
			return st, err
		}
		st.Life = fd
	}
	return st, nil
}

// Import takes a handed-over holder: life is its pipe (nil once stopped),
// exit the channel its exit arrives on (claimed from the new reaper before
// it runs).
func Import(st State, life *os.File, exit <-chan reaper.Exit) *Holder {
	return &Holder{Pid: st.Pid, Started: st.Started, life: life, exit: exit}
}
