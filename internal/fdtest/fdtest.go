// Package fdtest lists the test process's open descriptors, for tests that
// check a piece of the shim leaves none behind or holds one of a kind.
package fdtest

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"
)

// Targets returns what each open descriptor of this process points to
// (its /proc/self/fd link); one that closed while being read is left out.
func Targets(t testing.TB) []string {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	targets := make([]string, 0, len(ents))
	for _, e := range ents {
		if l, err := os.Readlink(filepath.Join("/proc/self/fd", e.Name())); err == nil {
			targets = append(targets, l)
		}
	}
	return targets
}

// Count returns how many descriptors this process has open.
func Count(t testing.TB) int {
	t.Helper()
	return len(Targets(t))
}

// CountWhere returns how many open descriptors point to a target match
// accepts.
func CountWhere(t testing.TB, match func(target string) bool) int {
	t.Helper()
	n := 0
	for _, l := range Targets(t) {
		if match(l) {
			n++
		}
	}
	return n
}

// Target returns what f's descriptor points to ("pipe:[…]" for a pipe), so
// a test can count the descriptors on that one object, unmoved by others
// that close in the background.
func Target(t testing.TB, f *os.File) string {
	t.Helper()
	rc, err := f.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var target string
	var lerr error
	if err := rc.Control(func(fd uintptr) {
		target, lerr = os.Readlink(filepath.Join("/proc/self/fd", strconv.Itoa(int(fd))))
	}); err != nil {
		t.Fatal(err)
	}
	if lerr != nil {
		t.Fatal(lerr)
	}
	return target
}
