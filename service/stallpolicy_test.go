package service

import (
	"testing"
	"time"
)

// Docker's namespaces never discard a stalled reader's output unless the
// options say otherwise; every other namespace keeps the default.
func TestStallTimeoutPerNamespace(t *testing.T) {
	for _, tc := range []struct {
		ns         string
		configured time.Duration
		want       time.Duration
	}{
		{"moby", 0, -1},
		{"plugins.moby", 0, -1},
		{"moby", 20 * time.Second, 20 * time.Second},
		{"moby", -1, -1},
		{"k8s.io", 0, 0},
		{"default", 0, 0},
		{"mobyx", 0, 0},
		{"k8s.io", -1, -1},
		{"default", 5 * time.Second, 5 * time.Second},
	} {
		if got := stallTimeoutFor(tc.ns, tc.configured); got != tc.want {
			t.Errorf("namespace %q, configured %v: %v, want %v", tc.ns, tc.configured, got, tc.want)
		}
	}
}
