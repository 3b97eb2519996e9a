package handover

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"time"

	"github.com/containerd/errdefs"

	"github.com/example/containerd-shim-example-v2/reaper"
)

// HelloAction is the command-line action with which a binary introduces
// itself to a daemon that considers executing it: it prints a Hello and
// exits 0.
const HelloAction = "upgrade-hello"

// helloTimeout bounds the successor's answer: a binary that hangs is
// refused. A variable only so that the unit test of a hanging binary is short.
var helloTimeout = 5 * time.Second

// Hello is a binary's answer to HelloAction.
type Hello struct {
	Build
	// The state layouts it can take over.
	MinStateVersion int `json:"minStateVersion"`
	StateVersion    int `json:"stateVersion"`
}

// OwnHello is this binary's answer.
func OwnHello(b Build) Hello {
	return Hello{Build: b, MinStateVersion: MinStateVersion, StateVersion: StateVersion}
}

// Accepts reports whether a binary that said h can take over state of
// layout v. The error is FailedPrecondition.
func (h Hello) Accepts(v int) error {
	_, err := h.Newest(v, v)
	return err
}

// Newest returns the newest layout from lo to hi (those a daemon can write
// its state in) that a binary that said h reads; none is FailedPrecondition.
func (h Hello) Newest(lo, hi int) (int, error) {
	v := min(hi, h.StateVersion)
	if v < max(lo, h.MinStateVersion) {
		writes := fmt.Sprint(lo)
		if hi != lo {
			writes = fmt.Sprintf("%d to %d", lo, hi)
		}
		return 0, fmt.Errorf("binary %s reads state layouts %d to %d, this daemon writes %s: %w",
			h.Version, h.MinStateVersion, h.StateVersion, writes, errdefs.ErrFailedPrecondition)
	}
	return v, nil
}

// AskHello runs binary with HelloAction and returns its answer. A binary
// that does not start, fails, hangs or answers anything but a Hello is
// refused (FailedPrecondition). The child is waited for through r, the
// daemon's one reaper.
func AskHello(ctx context.Context, r *reaper.Reaper, binary string) (Hello, error) {
	var h Hello
	pr, pw, err := os.Pipe()
	if err != nil {
		return h, fmt.Errorf("hello pipe: %w", err)
	}
	defer pr.Close()
	cmd := exec.Command(binary, HelloAction)
	cmd.Stdout = pw
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"}
	exitc, err := r.Start(cmd)
	pw.Close()
	if err != nil {
		return h, fmt.Errorf("new binary %s: %w: %w", binary, err, errdefs.ErrFailedPrecondition)
	}
	ctx, cancel := context.WithTimeout(ctx, helloTimeout)
	defer cancel()
	_ = pr.SetReadDeadline(time.Now().Add(helloTimeout))
	out, rerr := io.ReadAll(io.LimitReader(pr, 64<<10))
	var exit reaper.Exit
	select {
	case exit = <-exitc:
	case <-ctx.Done():
		_ = cmd.Process.Kill()
		<-exitc
		return h, fmt.Errorf("new binary %s did not answer %s within %v: %w", binary, HelloAction, helloTimeout, errdefs.ErrFailedPrecondition)
	}
	switch {
	case rerr != nil && !errors.Is(rerr, io.EOF):
		return h, fmt.Errorf("new binary %s: reading its hello: %v: %w", binary, rerr, errdefs.ErrFailedPrecondition)
	case exit.Status != 0:
		return h, fmt.Errorf("new binary %s: %s exited with status %d: %w", binary, HelloAction, exit.Status, errdefs.ErrFailedPrecondition)
	}
	if err := json.Unmarshal(out, &h); err != nil || h.StateVersion == 0 {
		return h, fmt.Errorf("new binary %s: %s printed no hello (%q): %w", binary, HelloAction, truncate(out, 200), errdefs.ErrFailedPrecondition)
	}
	return h, nil
}

func truncate(b []byte, n int) string {
	if len(b) > n {
		return string(b[:n]) + "..."
	}
	return string(b)
}
