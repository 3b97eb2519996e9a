package handover

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"

	"github.com/example/containerd-shim-example-v2/reaper"
)

func script(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "shim")
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

// The preflight: a binary that answers its hello is accepted (and says what
// it reads); one that fails, exits at once, prints something else, hangs, or
// reads other state layouts is refused with FailedPrecondition.
func TestAskHello(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r := reaper.New()
	go r.Run(ctx)
	helloTimeout = 500 * time.Millisecond

	good := script(t, fmt.Sprintf(`[ "$1" = %s ] || exit 3; echo '{"version":"v9","revision":"abc","minStateVersion":1,"stateVersion":%d}'`, HelloAction, StateVersion))
	h, err := AskHello(ctx, r, good)
	if err != nil {
		t.Fatal(err)
	}
	if h.Version != "v9" || h.Revision != "abc" || h.Accepts(StateVersion) != nil {
		t.Fatalf("hello %+v", h)
	}

	for name, body := range map[string]string{
		"fails":     `echo '{"version":"v9","stateVersion":1}'; exit 1`,
		"exits":     `exit 0`,
		"garbage":   `echo containerd-shim-example-v2 v1`,
		"hangs":     `exec sleep 5`,
		"not-there": "",
	} {
		t.Run(name, func(t *testing.T) {
			bin := script(t, body)
			if name == "not-there" {
				bin += ".missing"
			}
			start := time.Now()
			_, err := AskHello(ctx, r, bin)
			if !errdefs.IsFailedPrecondition(err) {
				t.Fatalf("%s: %v, want FailedPrecondition", name, err)
			}
			if time.Since(start) > 3*time.Second {
				t.Fatalf("%s: refused after %v", name, time.Since(start))
			}
		})
	}

	newer := Hello{MinStateVersion: StateVersion + 1, StateVersion: StateVersion + 2}
	if err := newer.Accepts(StateVersion); !errdefs.IsFailedPrecondition(err) || !strings.Contains(err.Error(), "layouts") {
		t.Fatalf("a binary that cannot read this layout: %v", err)
	}
}

// Newest picks the newest layout a daemon can write (lo to hi) that the
// next binary reads, and refuses when they share none.
func TestHelloNewestCommonLayout(t *testing.T) {
	for _, c := range []struct {
		min, max, lo, hi, want int // want 0: refused
	}{
		{1, 9, 8, 9, 9},   // the same build
		{1, 8, 8, 9, 8},   // the build before
		{1, 7, 8, 9, 0},   // older still
		{9, 12, 8, 9, 9},  // a newer build
		{10, 12, 8, 9, 0}, // one that reads only newer layouts
		{1, 8, 9, 9, 0},   // the state needs 9: the build before cannot take it
	} {
		h := Hello{Build: Build{Version: "next"}, MinStateVersion: c.min, StateVersion: c.max}
		got, err := h.Newest(c.lo, c.hi)
		switch {
		case c.want == 0 && (!errdefs.IsFailedPrecondition(err) || !strings.Contains(err.Error(), "reads state layouts")):
			t.Errorf("reads %d..%d, writes %d..%d: %d, %v, want FailedPrecondition", c.min, c.max, c.lo, c.hi, got, err)
		case c.want != 0 && (err != nil || got != c.want):
			t.Errorf("reads %d..%d, writes %d..%d: %d, %v, want %d", c.min, c.max, c.lo, c.hi, got, err, c.want)
		}
	}
}

// State goes through a memory file; a layout this binary cannot read is
// refused.
func TestEnvelopeRoundTrip(t *testing.T) {
	var fds FDs
	defer fds.Release()
	fd, err := WriteEnvelope(Envelope{StateVersion: StateVersion, From: Build{Version: "v1"}, Body: []byte(`{"tasks":3}`)}, &fds)
	if err != nil {
		t.Fatal(err)
	}
	fds.files = nil // ReadEnvelope closes it, as the successor does
	env, err := ReadEnvelope(strconv.Itoa(fd))
	if err != nil {
		t.Fatal(err)
	}
	if env.From.Version != "v1" || string(env.Body) != `{"tasks":3}` {
		t.Fatalf("read back %+v", env)
	}
	fd, err = WriteEnvelope(Envelope{StateVersion: StateVersion + 1}, &fds)
	if err != nil {
		t.Fatal(err)
	}
	fds.files = nil
	if _, err := ReadEnvelope(strconv.Itoa(fd)); !errdefs.IsFailedPrecondition(err) {
		t.Fatalf("newer layout: %v, want FailedPrecondition", err)
	}
	if _, err := ReadEnvelope("x"); !errdefs.IsInvalidArgument(err) {
		t.Fatalf("bad fd: %v", err)
	}
}
