package process

import (
	"net"
	"os"
	"testing"
)

// TestMain lets the test binary stand in for a runtime's helper:
// with PROCESS_TEST_CONSOLE_HANGUP set to a console socket's path it
// connects, sends a byte without a pty master, and exits, as a runtime that
// failed to hand over its terminal would.
func TestMain(m *testing.M) {
	if sock := os.Getenv("PROCESS_TEST_CONSOLE_HANGUP"); sock != "" {
		conn, err := net.Dial("unix", sock)
		if err != nil {
			os.Exit(2)
		}
		_, _ = conn.Write([]byte{0})
		conn.Close()
		os.Exit(0)
	}
	os.Exit(m.Run())
}
