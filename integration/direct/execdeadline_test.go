package direct

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	taskv3 "github.com/containerd/containerd/api/runtime/task/v3"
)

// An exec's Start whose deadline passes while the runtime launches it (a
// probe with a short timeout on a busy node) leaves nothing behind: the
// runtime used to be killed at the deadline, and killed after it had
// started the process but before it wrote the PID file, it left that
// process running in the container with nothing tracking it (Kill said it
// had finished, Delete succeeded) and runc's temporary PID file in the
// bundle. The runtime now finishes, and a process started after the
// deadline is killed.
func TestExecStartCutShortByItsDeadlineLeavesNothing(t *testing.T) {
	t.Parallel()
	env := NewEnv(t)
	c := env.Run(t, Config{Mode: Bootstrap, Name: "execdl", Args: loopArgs, NullIO: true})
	ctx := TestContext(t, 5*time.Minute)
	start(t, ctx, c, "")
	cut := 0
	for i := 0; i < 60; i++ {
		id := fmt.Sprintf("x%d", i)
		io := NewStdio(t, StdioConfig{Stdin: true})
		addExec(t, ctx, c, id, []string{"sleep", "1000"}, io)
		sctx, cancel := context.WithTimeout(ctx, time.Duration(5+i%20)*time.Millisecond)
		if _, err := c.Task().Start(sctx, &taskv3.StartRequest{ID: c.ID, ExecID: id}); err != nil {
			cut++
		}
		cancel()
		c.Task().Kill(ctx, &taskv3.KillRequest{ID: c.ID, ExecID: id, Signal: sigKILL})
		wait(t, ctx, c, id)
		deleteTask(t, ctx, c, id)
		io.close()
	}
	if cut == 0 {
		t.Skip("no Start was cut short by its deadline on this machine")
	}
	// A runtime still at work for the last execs cut short (it runs on
	// for up to 10 s) may start its process after the loop: that process
	// is killed once the runtime has finished.
	var n int
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		resp, err := c.Task().Pids(ctx, &taskv3.PidsRequest{ID: c.ID})
		if err != nil {
			t.Fatal(err)
		}
		if n = len(resp.GetProcesses()); n == 1 || time.Now().After(deadline) {
			break
		}
	}
	if n != 1 {
		t.Errorf("%d processes in the container 15 s after %d execs (%d cut short) were killed and deleted, want the init alone", n, 60, cut)
	}
	ents, err := os.ReadDir(c.Bundle.Dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if strings.Contains(e.Name(), "exec-") {
			t.Errorf("%s left in the bundle", e.Name())
		}
	}
	stop(t, ctx, c)
}
