package direct

import (
	"fmt"
	"os"
	"testing"
)

// TestMain removes the run's scratch directory (busybox rootfs, runc link)
// after every test's own cleanup has run.
func TestMain(m *testing.M) {
	code := m.Run()
	if err := Cleanup(); err != nil {
		fmt.Fprintf(os.Stderr, "direct: cleanup: %v\n", err)
		code = 1
	}
	os.Exit(code)
}
