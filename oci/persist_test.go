package oci

import (
	"os"
	"path/filepath"
	"testing"
)

// The record names the runtime by the path the daemon found and by its
// name: Load gives the path while it is there, and the name once it is
// gone (a runtime reinstalled elsewhere is found again through PATH).
func TestLoadPrefersTheFoundPathWhileItExists(t *testing.T) {
	dir := t.TempDir()
	bin, bundle := filepath.Join(dir, "bin"), filepath.Join(dir, "bundle")
	for _, d := range []string{bin, bundle} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	const name = "shim-test-persisted-runtime"
	exe := filepath.Join(bin, name)
	if err := os.WriteFile(exe, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", bin+":"+os.Getenv("PATH"))
	if err := (&Runtime{Binary: name, Root: "/r"}).Save(bundle); err != nil {
		t.Fatal(err)
	}
	r, err := Load(bundle, "/default")
	if err != nil || r.Binary != exe || r.Root != "/r" {
		t.Fatalf("Load: binary %q root %q (%v); want %q, /r", r.Binary, r.Root, err, exe)
	}
	if err := os.Remove(exe); err != nil {
		t.Fatal(err)
	}
	if r, err = Load(bundle, "/default"); err != nil || r.Binary != name {
		t.Fatalf("Load with the found path gone: binary %q (%v); want the name %q", r.Binary, err, name)
	}
}
