package harness

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"time"

	"github.com/containerd/containerd/v2/pkg/namespaces"
)

// CtrCmd builds (does not start) a command running this daemon's flavor of ctr against it:
// `ctr --address <sock> --namespace <ns from ctx, else "default"> args...`. It is killed
// when ctx ends.
func (d *Daemon) CtrCmd(ctx context.Context, args ...string) *exec.Cmd {
	ns, ok := namespaces.Namespace(ctx)
	if !ok || ns == "" {
		ns = namespaces.Default
	}
	full := append([]string{"--address", d.Address, "--namespace", ns}, args...)
	cmd := exec.CommandContext(ctx, d.CtrPath, full...)
	if d.variant.rootless != nil {
		cmd = d.rootlessCtrCmd(ctx, full)
	}
	cmd.Env = append(filteredEnv("CONTAINERD_ADDRESS", "CONTAINERD_NAMESPACE", "CONTAINERD_SNAPSHOTTER", "CONTAINERD_RUNTIME"), "PATH="+d.PATH)
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

// Ctr runs ctr (see CtrCmd) and returns its stdout, stderr and exit code (see RunCmd).
func (d *Daemon) Ctr(ctx context.Context, args ...string) (stdout, stderr string, code int, err error) {
	return RunCmd(ctx, d.CtrCmd(ctx, args...))
}

// RunCmd runs a client command built with exec.CommandContext(ctx, ...) and returns its
// stdout, stderr and exit code. err is non-nil only when the command could not be run or was
// killed (e.g. ctx expired); a non-zero exit is reported through code alone.
func RunCmd(ctx context.Context, cmd *exec.Cmd) (stdout, stderr string, code int, err error) {
	var out, errb bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &errb
	err = cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) && ee.Exited() && ctx.Err() == nil {
		return out.String(), errb.String(), ee.ExitCode(), nil
	}
	if err != nil {
		if ctx.Err() != nil {
			err = fmt.Errorf("%s: killed, did not finish before the context ended (%w): %v", strings.Join(cmd.Args, " "), ctx.Err(), err)
		}
		return out.String(), errb.String(), -1, err
	}
	return out.String(), errb.String(), 0, nil
}
