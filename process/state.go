package process

import (
	"fmt"

	"github.com/containerd/errdefs"
)

// Status is where a process is in its life.
//
//	init: created --start--> running <--pause/resume--> paused
//	      created|running|paused --(exit)--> stopped
//	      created|stopped --delete--> deleted
//	exec: created (added) --start--> running --(exit)--> stopped
//	      created|stopped --delete--> deleted
type Status int

const (
	Created Status = iota + 1
	Running
	Paused
	Stopped
	Deleted
)

func (s Status) String() string {
	switch s {
	case Created:
		return "created"
	case Running:
		return "running"
	case Paused:
		return "paused"
	case Stopped:
		return "stopped"
	case Deleted:
		return "deleted"
	}
	return fmt.Sprintf("status(%d)", int(s))
}

// Op is a request made of a process.
type Op string

const (
	OpStart      Op = "start"
	OpDelete     Op = "delete"
	OpPause      Op = "pause"
	OpResume     Op = "resume"
	OpExec       Op = "exec"
	OpUpdate     Op = "update"
	OpCheckpoint Op = "checkpoint"
	OpResize     Op = "resize"
)

// allowed lists, per status, the operations a process accepts. Kill and
// CloseIO are not here: they are accepted in every live status and answered
// per process (kill of a finished process is NotFound, not a state error).
var allowed = map[Status]map[Op]bool{
	Created: {OpStart: true, OpDelete: true, OpExec: true, OpUpdate: true, OpResize: true},
	Running: {OpPause: true, OpExec: true, OpUpdate: true, OpCheckpoint: true, OpResize: true},
	Paused:  {OpResume: true, OpUpdate: true, OpCheckpoint: true, OpResize: true},
	Stopped: {OpDelete: true, OpResize: true},
	Deleted: {},
}

// check returns nil when op is allowed in status s, or a typed error saying
// why not: NotFound for a deleted process, FailedPrecondition otherwise.
func check(s Status, op Op) error {
	if allowed[s][op] {
		return nil
	}
	if s == Deleted {
		return fmt.Errorf("process already deleted: %w", errdefs.ErrNotFound)
	}
	return fmt.Errorf("cannot %s a %s process: %w", op, s, errdefs.ErrFailedPrecondition)
}
