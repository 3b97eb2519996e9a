package procstat

import (
	"errors"
	"os"
	"os/exec"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestReadTellsALiveProcessFromAZombieAndAGoneOne(t *testing.T) {
	st, err := Read(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if st.Exiting() {
		t.Errorf("this test process reads as exiting: %+v", st)
	}
	if st.Ppid != os.Getppid() {
		t.Errorf("this test process's parent reads as %d, want %d", st.Ppid, os.Getppid())
	}
	if sid, err := unix.Getsid(0); err != nil || st.Session != sid {
		t.Errorf("this test process's session reads as %d, want %d (%v)", st.Session, sid, err)
	}
	cmd := exec.Command("true")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := cmd.Process.Pid
	for i := 0; ; i++ { // exited, not yet waited for: a zombie
		if st, err = Read(pid); err == nil && st.State == 'Z' {
			break
		}
		if i > 500 {
			t.Fatalf("child never became a zombie: %+v, %v", st, err)
		}
		time.Sleep(2 * time.Millisecond)
	}
	if !st.Exiting() {
		t.Errorf("a zombie does not read as exiting: %+v", st)
	}
	_ = cmd.Wait()
	if _, err := Read(pid); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a reaped child: %v, want not-exist", err)
	}
}
