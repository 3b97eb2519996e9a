package io

import (
	"os/exec"
	"time"
)

// Env is what Open needs to know about the process whose stdio it is and
// the party that reads it.
type Env struct {
	ProcessID string // container id (init) or exec id: the logger's CONTAINER_ID
	Namespace string // CONTAINER_NAMESPACE
	// Spawn starts a helper process (a logger) as a child of the shim and
	// has exited called once with its exit status. The shim's reaper owns
	// the wait (io does not call cmd.Wait), and calls exited as one of its
	// exit callbacks: an in-place upgrade pauses the reaper, which waits for
	// the callbacks under way, so a logger reaped just before the pause is
	// known to be gone when its stdio is handed over.
	Spawn func(cmd *exec.Cmd, exited func(status int)) error
	// Claim does the same for an already running child (a binary:// logger
	// handed over by an upgrade). Nil: none can be taken over.
	Claim func(pid int, exited func(status int))
	// LoggerReadyTimeout overrides the default readiness bound (tests).
	LoggerReadyTimeout time.Duration
	// StallTimeout overrides DefaultStallTimeout; negative waits forever.
	StallTimeout time.Duration
	// ReaderOwner, if set, reports on the party that reads the client's
	// FIFOs, containerd for CRI: whether it is down (restarting), and if
	// not, since when it has been up (zero: unknown). While it is down, and
	// for a whole timeout (at least DefaultReturnGrace) after it is back,
	// the stall clock does not run out: it reads the FIFOs again once it has
	// recovered. Asked only when a clock runs out, then about once a second
	// while the owner is down.
	ReaderOwner func() (down bool, upSince time.Time)
	// ReturnGrace overrides DefaultReturnGrace (tests).
	ReturnGrace time.Duration
	// AttachTimeout overrides DefaultAttachTimeout (tests).
	AttachTimeout time.Duration
	// HoldOutput keeps the process's output in its pipes until Launched:
	// the runtime writes its own errors to the stdio it was given, and a
	// launch that fails must not put them in the container's log (see
	// hold.go). Launched after a failed launch is never called; Close drops
	// what was held.
	HoldOutput bool
}
