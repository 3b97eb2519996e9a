package process

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"
)

// updateTestContainer is a running container (execTestContainer's) whose
// fake runtime's arms log into the file it returns ($FAKE_DIR/log).
func updateTestContainer(t *testing.T, arms string) (*Container, string) {
	t.Helper()
	c, _, dir := execTestContainer(t, arms)
	return c, filepath.Join(dir, "log")
}

// awaitUpdateBegun waits until the fake runtime's update has logged its
// beginning.
func awaitUpdateBegun(t *testing.T, log string) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		if b, _ := os.ReadFile(log); strings.Contains(string(b), "update-begun") {
			return
		} else if time.Now().After(deadline) {
			t.Fatal("the update did not begin")
		}
	}
}

// An Update and a Pause do not overlap: runc's update under the systemd
// cgroup driver freezes the container and thaws it after its changes, which
// undid a Pause that came in between (the task PAUSED, the container
// running). The stock shim orders them under the init's lock too.
func TestUpdateAndPauseDoNotOverlap(t *testing.T) {
	c, log := updateTestContainer(t, `
update) echo update-begun >> "$FAKE_DIR/log"; sleep 0.3; echo update-done >> "$FAKE_DIR/log"; exit 0;;
pause) echo pause >> "$FAKE_DIR/log"; exit 0;;`)
	ctx := context.Background()
	updated := make(chan error, 1)
	go func() { updated <- c.Update(ctx, []byte(`{"cpu":{"shares":512}}`)) }()
	awaitUpdateBegun(t, log)
	if err := c.Pause(ctx, nil); err != nil {
		t.Fatalf("pause: %v", err)
	}
	if err := <-updated; err != nil {
		t.Fatalf("update: %v", err)
	}
	b, _ := os.ReadFile(log)
	if got := strings.Fields(string(b)); strings.Join(got, " ") != "update-begun update-done pause" {
		t.Errorf("runtime calls %v, want the pause after the update's end", got)
	}
}

// An Update that meets the init's exit before the shim has processed it
// (runc: "container not running") is FailedPrecondition, as a Pause is.
func TestUpdateOfAnExitedInitIsFailedPrecondition(t *testing.T) {
	c, _ := updateTestContainer(t, `
update) echo "container not running" >&2; exit 1;;`)
	c.mu.Lock()
	c.initReaped = true
	c.mu.Unlock()
	if err := c.Update(context.Background(), []byte(`{}`)); !errdefs.IsFailedPrecondition(err) {
		t.Errorf("update: %v, want FailedPrecondition", err)
	}
}

// Update hands the runtime the resources encoded again, as the stock shim's
// go-runc does, not the client's bytes: an explicit null (written by
// encoders for an absent field) reaches the runtime as an absent field.
// runc 1.1 decodes --resources over defaults it then dereferences, so a null
// that cleared one ("memory":null, "cpu":null, "blockIO":null,
// "memory":{"limit":null}) made it crash, and the Update failed.
func TestUpdatePassesNoNullToTheRuntime(t *testing.T) {
	c, _, dir := execTestContainer(t, `
update) cat >"$FAKE_DIR/resources";;`)
	for _, res := range []string{
		`{"memory":null,"pids":{"limit":50}}`,
		`{"memory":{"limit":null},"pids":{"limit":50}}`,
		`{"cpu":null,"blockIO":null,"pids":{"limit":50}}`,
	} {
		if err := c.Update(context.Background(), []byte(res)); err != nil {
			t.Fatalf("Update %s: %v", res, err)
		}
		got, err := os.ReadFile(filepath.Join(dir, "resources"))
		if err != nil {
			t.Fatal(err)
		}
		var fields map[string]json.RawMessage
		if err := json.Unmarshal(got, &fields); err != nil {
			t.Fatalf("the runtime got %q: %v", got, err)
		}
		for name, v := range fields {
			if string(v) == "null" || string(v) == `{"limit":null}` {
				t.Errorf("Update %s: the runtime got %s: %s", res, name, v)
			}
		}
		if string(fields["pids"]) != `{"limit":50}` {
			t.Errorf("Update %s: the runtime got pids %s, want {\"limit\":50}", res, fields["pids"])
		}
	}
}

// A Kill(all) whose runtime failed between its freeze and its thaw has the
// container thawed, also when an Update holds the init's lock at that
// moment: the Kill does not wait, the thaw follows once the lock is free.
// (Only tried, the thaw was skipped for good, the task RUNNING while frozen.)
func TestKillAllFailedDuringAnUpdateStillThaws(t *testing.T) {
	for _, during := range []bool{false, true} {
		// A subtest each: its reaper ends with it (two in one process
		// would take each other's exits).
		t.Run(fmt.Sprintf("during an update %v", during), func(t *testing.T) { killAllFailedThaws(t, during) })
	}
}

func killAllFailedThaws(t *testing.T, during bool) {
	c, log := updateTestContainer(t, `
update) echo update-begun >> "$FAKE_DIR/log"; sleep 0.3; echo update-done >> "$FAKE_DIR/log"; exit 0;;
kill) echo "signal: killed" >&2; exit 1;;
state) echo '{"status":"paused"}';;
resume) echo resume >> "$FAKE_DIR/log"; exit 0;;`)
	ctx := context.Background()
	updated := make(chan error, 1)
	if during {
		go func() { updated <- c.Update(ctx, []byte(`{"cpu":{"shares":512}}`)) }()
		awaitUpdateBegun(t, log)
	} else {
		updated <- nil
	}
	if err := c.init.Kill(ctx, 15, true); err == nil {
		t.Fatal("Kill succeeded")
	}
	if err := <-updated; err != nil {
		t.Fatalf("update: %v", err)
	}
	var calls []string
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		b, _ := os.ReadFile(log)
		if calls = strings.Fields(string(b)); slices.Contains(calls, "resume") {
			break
		}
	}
	if !slices.Contains(calls, "resume") {
		t.Errorf("runtime calls %q, the frozen container never thawed (task %v)", calls, c.init.State().Status)
	}
}
