package direct

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// ShimBinaryName is the file containerd resolves io.example.v2 to.
const ShimBinaryName = "containerd-shim-example-v2"

// depsTimeout bounds the wait for runc and busybox when `make deps` is still
// installing them as the tests start (a fresh CI machine runs both at once).
const depsTimeout = 5 * time.Minute

// hostPath is appended to the shim's PATH so runc is found even when the
// test runs with a minimal PATH (Debian puts runc in /usr/sbin).
const hostPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// tools are found or prepared once per test binary run.
var tools struct {
	once    sync.Once
	err     error
	shim    string // absolute path of the shim binary
	runc    string // the runc binary the shim will run
	path    string // PATH for the shim
	tempDir string // per-run scratch (runc symlink dir, rootfs); removed by Cleanup
	rootfs  string
}

// shimBinary returns the shim binary: $SHIM_BINARY, else ../../bin relative to the
// package directory (where `make build` puts it).
func shimBinary() (string, error) {
	p := os.Getenv("SHIM_BINARY")
	if p == "" {
		p = filepath.Join("..", "..", "bin", ShimBinaryName)
	}
	abs, err := filepath.Abs(p)
	if err != nil {
		return "", err
	}
	st, err := os.Stat(abs)
	if err != nil {
		return "", fmt.Errorf("shim binary (set SHIM_BINARY or run `make build`): %w", err)
	}
	if !st.Mode().IsRegular() || st.Mode()&0o111 == 0 {
		return "", fmt.Errorf("shim binary %s is not an executable file", abs)
	}
	return abs, nil
}

// setup finds the binaries and prepares the per-run directory, once; it
// also cleans up after dead earlier runs.
func setup() error {
	tools.once.Do(func() { tools.err = prepare() })
	return tools.err
}

func prepare() error {
	shim, err := shimBinary()
	if err != nil {
		return err
	}
	tools.shim = shim
	if tools.tempDir, err = os.MkdirTemp("", "exd-run-"); err != nil {
		return err
	}
	if err := markOwned(tools.tempDir); err != nil {
		return err
	}
	if tools.path, err = shimSearchPath(tools.tempDir); err != nil {
		return err
	}
	deadline := time.Now().Add(depsTimeout)
	for {
		tools.runc, err = lookPathIn("runc", tools.path)
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(time.Second) // `make deps` may still be installing it
	}
	if err != nil {
		return fmt.Errorf("runc not found in %s: %w", tools.path, err)
	}
	sweepStale() // uses runc
	if err := waitForFile(busyboxPath, time.Until(deadline)); err != nil {
		return fmt.Errorf("busybox (apt-get install busybox-static, or make deps): %w", err)
	}
	tools.rootfs, err = buildRootfs(filepath.Join(tools.tempDir, "rootfs"))
	return err
}

// shimSearchPath is the PATH the shim gets: the test's own plus the usual
// system directories, behind a directory holding `runc` -> $TEST_RUNC when
// that is set. The shim runs "runc" from its PATH (no runtime options name
// a binary), so that is how a chosen runc is put under test.
func shimSearchPath(scratch string) (string, error) {
	path := os.Getenv("PATH") + ":" + hostPath
	r := os.Getenv("TEST_RUNC")
	if r == "" {
		return path, nil
	}
	abs, err := filepath.Abs(r)
	if err != nil {
		return "", err
	}
	if err := waitForFile(abs, depsTimeout); err != nil {
		return "", fmt.Errorf("TEST_RUNC: %w", err)
	}
	dir := filepath.Join(scratch, "runc-bin")
	if err := os.Mkdir(dir, 0o755); err != nil {
		return "", err
	}
	if err := os.Symlink(abs, filepath.Join(dir, "runc")); err != nil {
		return "", err
	}
	return dir + ":" + path, nil
}

// Cleanup removes what the run prepared (call it from TestMain).
func Cleanup() error {
	if tools.tempDir == "" {
		return nil
	}
	return os.RemoveAll(tools.tempDir)
}

// ShimPath, RuncPath and SearchPath report what setup found.
func ShimPath() string   { return tools.shim }
func RuncPath() string   { return tools.runc }
func SearchPath() string { return tools.path }

func lookPathIn(name, pathList string) (string, error) {
	for _, dir := range filepath.SplitList(pathList) {
		if dir == "" {
			continue
		}
		p := filepath.Join(dir, name)
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", exec.ErrNotFound
}

// waitForFile polls for path to exist (a package being installed).
func waitForFile(path string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		_, err := os.Stat(path)
		if err == nil || !errors.Is(err, os.ErrNotExist) || time.Now().After(deadline) {
			return err
		}
		time.Sleep(time.Second)
	}
}

// trimOutput shortens a command's output for an error message.
func trimOutput(b []byte) string {
	s := strings.TrimSpace(string(b))
	if len(s) > 2000 {
		s = s[:2000] + "..."
	}
	return s
}
