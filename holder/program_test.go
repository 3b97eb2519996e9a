package holder

import (
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// memfdNoexecEnv, when set, holds the vm.memfd_noexec value the test runs
// under: the test re-runs itself as the first process of a new PID (and
// mount) namespace, where the setting is its own (Linux 6.3 and later), so
// the host's is never touched.
const memfdNoexecEnv = "HOLDER_TEST_MEMFD_NOEXEC"

// Hosts may forbid executable memfds: vm.memfd_noexec=1 makes a memfd
// without MFD_EXEC non-executable, =2 refuses MFD_EXEC outright. A pod must
// start under either, with the tiny holder where it can run and the Go
// holder otherwise.
func TestHolderStartsWhereMemfdsAreNotExecutable(t *testing.T) {
	needRoot(t)
	if tinyHolder() == nil {
		t.Skip("no tiny holder on this architecture")
	}
	if level := os.Getenv(memfdNoexecEnv); level != "" {
		inMemfdNoexecNamespace(t, level)
		return
	}
	for _, level := range []string{"1", "2"} {
		t.Run("memfd_noexec="+level, func(t *testing.T) {
			cmd := exec.Command("/proc/self/exe", "-test.run", "^TestHolderStartsWhereMemfdsAreNotExecutable$", "-test.v")
			cmd.Env = append(os.Environ(), memfdNoexecEnv+"="+level)
			cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWPID | syscall.CLONE_NEWNS}
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("%v\n%s", err, out)
			}
			if strings.Contains(string(out), "SKIP") {
				t.Skipf("%s", out)
			}
		})
	}
}

func inMemfdNoexecNamespace(t *testing.T, level string) {
	// A /proc of this PID namespace, in this mount namespace only, to read
	// the holder's executable by the pid Start gives.
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("proc", "/proc", "proc", 0, ""); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile("/proc/sys/vm/memfd_noexec", []byte(level), 0); err != nil {
		t.Skipf("vm.memfd_noexec cannot be set here (Linux before 6.3?): %v", err)
	}
	r := startReaper(t)
	h, err := Start(Config{ID: "noexec", NewIPC: true, Reaper: r})
	if err != nil {
		t.Fatalf("Start with vm.memfd_noexec=%s: %v", level, err)
	}
	exe, err := os.Readlink("/proc/" + strconv.Itoa(h.Pid) + "/exe")
	stopAndWait(t, h)
	if err != nil {
		t.Fatal(err)
	}
	// At 1 the tiny holder still runs (it asks for MFD_EXEC); at 2 only the
	// Go holder can.
	tiny := strings.HasPrefix(exe, "/memfd:")
	if want := level == "1"; tiny != want {
		t.Errorf("vm.memfd_noexec=%s: holder runs %s; want the tiny holder: %v", level, exe, want)
	}

	// A memfd that is not executable fails at exec, and that failure is
	// one fork treats as a reason to start the Go holder instead.
	fd, err := unix.MemfdCreate(Action, unix.MFD_CLOEXEC|unix.MFD_NOEXEC_SEAL)
	if err != nil {
		t.Fatal(err)
	}
	mem := os.NewFile(uintptr(fd), Action)
	defer mem.Close()
	if _, err := mem.Write(tinyHolder()); err != nil {
		t.Fatal(err)
	}
	lifeR, lifeW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer lifeR.Close()
	defer lifeW.Close()
	base := &exec.Cmd{Args: []string{"holder", Action, "x"}, Dir: "/",
		ExtraFiles: []*os.File{lifeR}, SysProcAttr: &syscall.SysProcAttr{}}
	if _, _, _, err := startProgram(r, base, mem, nil); err == nil || !execRefused(err) {
		t.Errorf("exec of a non-executable memfd: %v; want a refusal execRefused knows", err)
	}
}
