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

// Flavors of containerd. A flavor is a release line ("1.6", "1.7", "2.0" ... "2.4");
// Flavor2x names the newest 2.x line the suite knows (NewestFlavor2x).
const (
	Flavor16 = "1.6" // Debian's containerd 1.6 (/usr/bin/containerd, /usr/bin/ctr)
	Flavor2x = "2.x" // the newest 2.x release (ContainerdReleases[NewestFlavor2x])
)

// NewestFlavor2x is the release line Flavor2x stands for.
const NewestFlavor2x = "2.4"

// ContainerdReleases maps each release line to the release scripts/deps.sh builds into
// /opt/containerd/<release>/bin (1.6 is Debian's package). Keep both lists in step.
var ContainerdReleases = map[string]string{
	"1.7": "v1.7.35",
	"2.0": "v2.0.14",
	"2.1": "v2.1.9",
	"2.2": "v2.2.9",
	"2.3": "v2.3.7",
	"2.4": "v2.4.2",
}

// SmokeFlavors are the release lines the compatibility smoke set runs under (make matrix),
// beside the full suite's 1.6 and newest 2.x.
var SmokeFlavors = []string{"1.7", "2.0", "2.1", "2.2", "2.3"}

// AllFlavors lists the flavors every scenario runs under, one subtest each:
// $TEST_FLAVORS (space or comma separated), default 1.6 and the newest 2.x.
var AllFlavors = FlavorsFromEnv("TEST_FLAVORS", []string{Flavor16, Flavor2x})

// FlavorsFromEnv reads a list of flavors from the named variable (space or comma
// separated), or returns def when it is unset or empty.
func FlavorsFromEnv(name string, def []string) []string {
	v := strings.FieldsFunc(os.Getenv(name), func(r rune) bool { return r == ',' || r == ' ' })
	if len(v) == 0 {
		return def
	}
	return v
}

// FlavorRelease resolves a flavor to its release line ("2.x" -> "2.4").
func FlavorRelease(flavor string) string {
	if flavor == Flavor2x {
		return NewestFlavor2x
	}
	return flavor
}

// FlavorMajor is a flavor's major version (1 or 2; 0 for a malformed one).
func FlavorMajor(flavor string) int {
	switch {
	case strings.HasPrefix(FlavorRelease(flavor), "1."):
		return 1
	case strings.HasPrefix(FlavorRelease(flavor), "2."):
		return 2
	}
	return 0
}

// FlavorAtLeast reports whether a flavor's release line is minor or newer ("2.3").
func FlavorAtLeast(flavor, minor string) bool {
	var a, b [2]int
	fmt.Sscanf(FlavorRelease(flavor), "%d.%d", &a[0], &a[1])
	fmt.Sscanf(minor, "%d.%d", &b[0], &b[1])
	return a[0] > b[0] || a[0] == b[0] && a[1] >= b[1]
}

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

// flavorBinDir returns the directory that holds containerd, ctr and the stock shim of a
// flavor: Debian's /usr/bin for 1.6, else /opt/containerd/<release>/bin (scripts/deps.sh).
// $CONTAINERD2_DIR overrides the directory of Flavor2x.
func flavorBinDir(flavor string) (string, error) {
	if flavor == Flavor16 {
		return "/usr/bin", nil
	}
	if d := os.Getenv("CONTAINERD2_DIR"); d != "" && flavor == Flavor2x {
		return d, nil
	}
	if rel, ok := ContainerdReleases[FlavorRelease(flavor)]; ok {
		return filepath.Join("/opt/containerd", rel, "bin"), nil
	}
	return "", fmt.Errorf("unknown containerd flavor %q (want %s, %s or one of %v)", flavor, Flavor16, Flavor2x, SmokeFlavors)
}

// RuncUnderTest is the OCI runtime binary the shims run as `runc`: $TEST_RUNC (for
// instance /opt/runc/v1.5.1/runc from scripts/deps.sh), or "" for the runc on PATH
// (Debian's 1.1.5). The harness links it as runc into a daemon's bin dir, first on the
// PATH the daemon hands its shims, so the shim under test and the stock shim both run it.
func RuncUnderTest() string { return os.Getenv("TEST_RUNC") }

// CrunUnderTest says whether RuncUnderTest is crun (TEST_RUNC=/usr/bin/crun).
func CrunUnderTest() bool { return filepath.Base(RuncUnderTest()) == "crun" }

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
