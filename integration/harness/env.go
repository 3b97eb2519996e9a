package harness

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// Flavors of containerd the suite runs against.
const (
	Flavor16 = "1.6" // Debian's containerd 1.6 (/usr/bin/containerd, /usr/bin/ctr)
	Flavor2x = "2.x" // containerd 2.x built with go install into /opt/containerd2/bin
)

// AllFlavors lists every flavor; each scenario runs as one subtest per flavor.
var AllFlavors = []string{Flavor16, Flavor2x}

// DefaultRuntime is the runtime under test when TEST_RUNTIME is not set.
const DefaultRuntime = "io.example.v2"

// ShimBinaryName is the file name of the shim under test (what DefaultRuntime resolves to).
const ShimBinaryName = "containerd-shim-example-v2"

// RuncRoot is where the runc-based shims keep runc state: <RuncRoot>/<namespace>/<id>.
// It is shared by every containerd on the host, hence the unique namespace per test.
var RuncRoot = "/run/containerd/runc"

// ShimSocketDir is where the stock shim (and shims that copy its scheme) put their sockets.
var ShimSocketDir = "/run/containerd/s"

// BaseDir holds the private directories of the daemons the harness starts
// (short, because unix socket paths are limited to 108 bytes).
var BaseDir = "/run/ex-test"

// Runtime returns the runtime name under test: $TEST_RUNTIME, default io.example.v2.
// Run the suite with TEST_RUNTIME=io.containerd.runc.v2 to check the tests against the
// stock runc shim.
func Runtime() string {
	if r := os.Getenv("TEST_RUNTIME"); r != "" {
		return r
	}
	return DefaultRuntime
}

// RuntimeBinaryName maps a runtime name to the binary containerd looks for:
// containerd-shim-<second-to-last>-<last> (io.example.v2 -> containerd-shim-example-v2).
func RuntimeBinaryName(runtime string) string {
	if filepath.IsAbs(runtime) {
		return filepath.Base(runtime)
	}
	parts := strings.Split(runtime, ".")
	if len(parts) < 2 {
		return runtime
	}
	return "containerd-shim-" + parts[len(parts)-2] + "-" + parts[len(parts)-1]
}

// flavorBinDir returns the directory that holds containerd and ctr for a flavor.
// containerd 2.x's directory can be moved with $CONTAINERD2_DIR (as scripts/deps.sh does).
func flavorBinDir(flavor string) (string, error) {
	switch flavor {
	case Flavor16:
		return "/usr/bin", nil
	case Flavor2x:
		if d := os.Getenv("CONTAINERD2_DIR"); d != "" {
			return d, nil
		}
		return "/opt/containerd2/bin", nil
	}
	return "", fmt.Errorf("unknown containerd flavor %q (want %q or %q)", flavor, Flavor16, Flavor2x)
}

// ShimUnderTest returns the shim binary to install as containerd-shim-example-v2:
// $SHIM_BINARY, else ../bin/containerd-shim-example-v2 (or ../../bin/...) relative to the
// working directory when it exists, else "".
func ShimUnderTest() string {
	if p := os.Getenv("SHIM_BINARY"); p != "" {
		if abs, err := filepath.Abs(p); err == nil {
			return abs
		}
		return p
	}
	for _, rel := range []string{"../bin", "../../bin"} {
		p, err := filepath.Abs(filepath.Join(rel, ShimBinaryName))
		if err != nil {
			continue
		}
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() {
			return p
		}
	}
	return ""
}

// RandID returns n random lowercase hex characters.
func RandID(n int) string {
	b := make([]byte, (n+1)/2)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)[:n]
}

// lookPathIn finds an executable named name in the colon separated dirs.
func lookPathIn(name, pathList string) string {
	for _, dir := range filepath.SplitList(pathList) {
		if dir == "" {
			continue
		}
		p := filepath.Join(dir, name)
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
			return p
		}
	}
	return ""
}

// copyFile installs src at dst the way `make install` (install(1)) does: a
// kernel-side copy (copy_file_range, through io.Copy between files), then a
// rename. How a binary was written decides how the kernel caches it: one
// large write(2) can leave it in 2 MiB page-cache folios, which newer
// kernels map whole on the first fault, so every shim's RSS would count
// 2 MiB per folio touched (the benchmark measures RSS).
func copyFile(src, dst string, mode os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	tmp := dst + ".tmp"
	out, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	if err := out.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, dst)
}
