package integration

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	taskv2 "github.com/containerd/containerd/api/runtime/task/v2"
	taskv3 "github.com/containerd/containerd/api/runtime/task/v3"
	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/ttrpc"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/example/containerd-shim-example-v2/integration/harness"
)

// peerClientEnv makes the test binary act as a one-call shim client instead of running tests
// (see init below): it is re-executed under other credentials by TestShimSocketSecurity.
const (
	peerClientEnv = "EX_TEST_PEER_SOCKET" // socket to dial
	peerTaskEnv   = "EX_TEST_PEER_TASK"   // task id for Connect
)

func init() {
	socket := os.Getenv(peerClientEnv)
	if socket == "" {
		return
	}
	// One line on stdout: "dial-error: ...", "call-error: ..." or "ok <shim pid>".
	conn, err := net.DialTimeout("unix", socket, 5*time.Second)
	if err != nil {
		fmt.Printf("dial-error: %v\n", err)
		os.Exit(0)
	}
	c := ttrpc.NewClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	var shimPid uint32
	resp, err := taskv2.NewTaskClient(c).Connect(ctx, &taskv2.ConnectRequest{ID: os.Getenv(peerTaskEnv)})
	if status.Code(err) == codes.Unimplemented {
		// A v3-only shim (the stock shim under containerd 2.x).
		var r3 *taskv3.ConnectResponse
		r3, err = taskv3.NewTTRPCTaskClient(c).Connect(ctx, &taskv3.ConnectRequest{ID: os.Getenv(peerTaskEnv)})
		shimPid = r3.GetShimPid()
	} else {
		shimPid = resp.GetShimPid()
	}
	cancel()
	c.Close()
	if err != nil {
		fmt.Printf("call-error: %v\n", err)
	} else {
		fmt.Printf("ok %d\n", shimPid)
	}
	os.Exit(0)
}

// Security 7a: the shim's socket is a filesystem socket (no abstract socket is listened on),
// mode 0600, owned by root, in a root-owned directory nobody else may enter (0700; the
// directory is shared with containerd's own shims, which create it 0600 — either is fine,
// what matters is no group/other access). A client with another uid, or with root's uid but
// another gid, is refused (ttrpc's same-user handshake), even when the directory and socket
// permissions would let it connect (uid 65534 with CAP_DAC_OVERRIDE); root itself succeeds
// through the same helper.
func TestShimSocketSecurity(t *testing.T) {
	helper := peerHelperBinary(t)
	forEachFlavor(t, func(t *testing.T, d *harness.Daemon) {
		ctx, ns := d.NewNamespace(t)
		ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
		defer cancel()
		c := newContainer(t, ctx, d, "sec-sock", []string{"sleep", "1000000"})
		startTask(t, ctx, c, cio.NullIO)
		addr := readAddressFile(t, d, ns, "sec-sock")
		socket := socketOf(t, addr)
		shimPid := shimPidFor(t, d, ns, "sec-sock", "sec-sock")

		if strings.HasPrefix(socket, "@") || !filepath.IsAbs(socket) {
			t.Errorf("address %q is not a filesystem socket path", addr)
		}
		var st syscall.Stat_t
		if err := syscall.Lstat(socket, &st); err != nil {
			t.Fatalf("socket %s: %v", socket, err)
		}
		if st.Mode&syscall.S_IFMT != syscall.S_IFSOCK || st.Mode&0o777 != 0o600 || st.Uid != 0 || st.Gid != 0 {
			t.Errorf("socket %s: mode %o uid %d gid %d, want a socket of mode 0600 owned by root:root", socket, st.Mode, st.Uid, st.Gid)
		}
		dir := filepath.Dir(socket)
		if err := syscall.Stat(dir, &st); err != nil {
			t.Fatal(err)
		}
		t.Logf("socket %s (0600); directory %s mode %o uid %d", socket, dir, st.Mode&0o7777, st.Uid)
		if st.Uid != 0 || st.Mode&0o077 != 0 || st.Mode&0o7000 != 0 {
			t.Errorf("socket directory %s: mode %o uid %d, want owned by root with no access for group or others (0700)", dir, st.Mode&0o7777, st.Uid)
		}
		for _, l := range listeningUnixSockets(t, shimPid) {
			if l == "" || strings.HasPrefix(l, "@") {
				t.Errorf("shim %d listens on an abstract or unnamed unix socket %q", shimPid, l)
			} else if l != socket {
				t.Errorf("shim %d listens on %s besides its socket %s", shimPid, l, socket)
			}
		}

		for _, pc := range []struct {
			name    string
			cred    syscall.Credential
			ambient []uintptr
			wantOK  bool
		}{
			{"root (control)", syscall.Credential{Uid: 0, Gid: 0}, nil, true},
			{"uid 65534", syscall.Credential{Uid: 65534, Gid: 65534}, nil, false},
			{"uid 65534 with CAP_DAC_OVERRIDE", syscall.Credential{Uid: 65534, Gid: 65534}, []uintptr{unix.CAP_DAC_OVERRIDE}, false},
			{"uid 0 gid 65534", syscall.Credential{Uid: 0, Gid: 65534}, nil, false},
		} {
			cred := pc.cred
			cmd := exec.CommandContext(ctx, helper)
			cmd.Env = append(os.Environ(), peerClientEnv+"="+socket, peerTaskEnv+"=sec-sock")
			cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &cred, AmbientCaps: pc.ambient}
			out, err := cmd.CombinedOutput()
			res := strings.TrimSpace(string(out))
			t.Logf("client as %s: %s", pc.name, res)
			switch {
			case err != nil:
				t.Errorf("client as %s did not run: %v (%s)", pc.name, err, res)
			case pc.wantOK && res != fmt.Sprintf("ok %d", shimPid):
				t.Errorf("client as %s: %q, want ok %d (the helper itself does not work)", pc.name, res, shimPid)
			case !pc.wantOK && !strings.HasPrefix(res, "dial-error") && !strings.HasPrefix(res, "call-error"):
				t.Errorf("client as %s: %q, want the connection refused", pc.name, res)
			}
		}
		if !harness.PidExists(shimPid) {
			t.Errorf("shim %d died after the refused clients", shimPid)
		}
	})
}

// peerHelperBinary copies the test binary where uid 65534 can run it.
func peerHelperBinary(t *testing.T) string {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "ex-peer-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "peer-client")
	if err := os.WriteFile(p, data, 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

// listeningUnixSockets returns the paths of the listening unix sockets of process pid
// ("" for unnamed, "@..." for abstract), from its fds and /proc/net/unix.
func listeningUnixSockets(t *testing.T, pid int) []string {
	t.Helper()
	inodes := map[string]bool{}
	fds, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	for _, fd := range fds {
		l, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name()))
		if ino, ok := strings.CutPrefix(l, "socket:["); ok && err == nil {
			inodes[strings.TrimSuffix(ino, "]")] = true
		}
	}
	f, err := os.Open(fmt.Sprintf("/proc/%d/net/unix", pid))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// Num RefCount Protocol Flags Type St Inode [Path]; Flags 00010000 = listening.
		fl := strings.Fields(sc.Text())
		if len(fl) < 7 || !inodes[fl[6]] || fl[3] != "00010000" {
			continue
		}
		path := ""
		if len(fl) > 7 {
			path = fl[7]
		}
		out = append(out, path)
	}
	return out
}

// Security 7b: during a container's whole lifecycle (create with a file:// log, start, an
// exec with FIFOs, exit, delete) the shim daemon writes no file outside the task's bundle,
// the shim socket directory and the places it was asked to write to. strace follows the
// daemon (attached to it after the group's first container started it, so the lifecycle is
// that of a second container of the group) and every process it forks, and the test looks
// at every write-ish file syscall (open/openat for writing or creating, creat, mkdir*,
// mknod*, rename*, unlink*, link*, symlink*, mount, umount2).
//
// Whose writes count: the shim's own threads and the runtime commands it runs (runc create,
// start, exec, kill, delete, ...) — a shim answers for the command lines it gives its runtime.
// Not counted: `runc init` and everything below it, i.e. the container's processes. They
// run in the container's mount namespace (their paths are the container's, not the host's)
// and their writes are the workload's business.
//
// Allowed: the bundles of the group's tasks, the shim socket dir /run/containerd/s, the runc
// state of the namespace /run/containerd/runc/<ns>, /proc, /sys/fs/cgroup, /dev, the log
// file's directory the test asked for (the shim may create it), and the exec's FIFOs.
func TestShimWritesOnlyItsOwnFiles(t *testing.T) {
	stracePath, err := exec.LookPath("strace")
	if err != nil {
		t.Fatalf("strace is needed: %v", err)
	}
	forEachFlavor(t, func(t *testing.T, d *harness.Daemon) {
		ctx, ns := d.NewNamespace(t)
		ctx, cancel := context.WithTimeout(ctx, 90*time.Second)
		defer cancel()
		group := "sec-" + harness.RandID(8)

		anchor := newContainer(t, ctx, d, "sec-anchor", []string{"sleep", "1000000"}, groupAnnotation(group))
		startTask(t, ctx, anchor, cio.NullIO)
		shimPid := shimPidFor(t, d, ns, "sec-anchor", "sec-anchor")

		trace := filepath.Join(t.TempDir(), "strace.out")
		tracer := exec.Command(stracePath, "-f", "-qq", "-y", "-s", "4096", "-o", trace,
			"-e", "trace=open,openat,openat2,creat,mkdir,mkdirat,mknod,mknodat,rename,renameat,renameat2,unlink,unlinkat,link,linkat,symlink,symlinkat,mount,umount2,clone,clone3,fork,vfork,execve,execveat",
			"-p", strconv.Itoa(shimPid))
		tracer.Stderr = os.Stderr
		if err := tracer.Start(); err != nil {
			t.Fatalf("start strace: %v", err)
		}
		tracerDone := make(chan struct{})
		go func() { tracer.Wait(); close(tracerDone) }()
		stopTracer := func() {
			select {
			case <-tracerDone:
				return
			default:
			}
			_ = tracer.Process.Signal(syscall.SIGINT)
			select {
			case <-tracerDone:
			case <-time.After(10 * time.Second):
				_ = tracer.Process.Kill()
				<-tracerDone
			}
		}
		t.Cleanup(stopTracer)
		waitFor(t, 10*time.Second, "strace attached to every thread of the shim", func() bool { return allThreadsTraced(shimPid) })

		logDir := filepath.Join(t.TempDir(), "logs")
		logFile := filepath.Join(logDir, "sec-life.log")
		fifoDir := filepath.Join(d.FIFODir, "sec-"+ns)
		if err := os.MkdirAll(fifoDir, 0o700); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(fifoDir) })

		// The init ends on SIGTERM, sent once the exec has exited: an init that ended on its
		// own (on a file the exec made) raced with the exec's exit, and the kernel's SIGKILL
		// of the pid namespace's remaining processes made the exec exit 137 now and then.
		life := newContainer(t, ctx, d, "sec-life", []string{"sh", "-c", "trap 'exit 0' TERM; echo hello-log; while :; do sleep 0.05; done"}, groupAnnotation(group))
		task, statusC := startTask(t, ctx, life, cio.LogFile(logFile))
		var out lockedBuffer
		proc, err := task.Exec(ctx, "sec-exec", execSpec(t, ctx, task, "sh", "-c", "echo exec-out"),
			cio.NewCreator(cio.WithStreams(nil, &out, &out), cio.WithFIFODir(fifoDir)))
		if err != nil {
			t.Fatalf("exec: %v", err)
		}
		execWait, err := proc.Wait(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := proc.Start(ctx); err != nil {
			t.Fatalf("exec start: %v", err)
		}
		if code := exitCode(t, ctx, execWait); code != 0 {
			t.Errorf("exec: exit code %d", code)
		}
		waitIO(t, "exec sec-exec", proc.IO())
		if _, err := proc.Delete(ctx); err != nil {
			t.Errorf("exec delete: %v", err)
		}
		if err := task.Kill(ctx, syscall.SIGTERM); err != nil {
			t.Fatalf("stop sec-life: %v", err)
		}
		if code := exitCode(t, ctx, statusC); code != 0 {
			t.Errorf("sec-life: exit code %d", code)
		}
		if _, err := task.Delete(ctx); err != nil {
			t.Fatalf("delete: %v", err)
		}
		if err := life.Delete(ctx, containerd.WithSnapshotCleanup); err != nil {
			t.Fatalf("delete container: %v", err)
		}
		stopTracer()
		if data, _ := os.ReadFile(logFile); !strings.Contains(string(data), "hello-log") {
			t.Errorf("log file %s: %q, want the container's output", logFile, data)
		}
		if !strings.Contains(out.String(), "exec-out") {
			t.Errorf("exec output %q", out.String())
		}

		allowed := []string{
			d.BundleDir(ns, "sec-anchor"), d.BundleDir(ns, "sec-life"),
			harness.ShimSocketDir, filepath.Join(harness.RuncRoot, ns),
			"/proc", "/sys/fs/cgroup", "/dev",
			logDir, fifoDir,
		}
		writes, stats := tracedWrites(t, trace, shimPid)
		t.Logf("strace: %d lines, %d processes/threads, %d write-ish calls by the shim and its runtime commands, %d container-side lines skipped", stats.lines, stats.pids, len(writes), stats.skipped)
		var bad []string
		if os.Getenv("EX_TEST_DUMP_WRITES") != "" {
			for _, w := range writes {
				t.Logf("write: %s", w)
			}
		}
		for _, w := range writes {
			if !underAny(w.path, allowed) && !(harness.CrunUnderTest() && crunOwnWrite(w)) {
				bad = append(bad, w.String())
			}
		}
		sort.Strings(bad)
		bad = slices.Compact(bad)
		if len(bad) > 0 {
			t.Errorf("%d writes outside %v:\n  %s", len(bad), allowed, strings.Join(firstN(bad, 40), "\n  "))
		}
		if len(writes) == 0 {
			t.Errorf("no write-ish call traced at all: the check would be vacuous (trace %s)", trace)
		}
	})
}

// allThreadsTraced reports whether every thread of pid has a tracer.
func allThreadsTraced(pid int) bool {
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil || len(tasks) == 0 {
		return false
	}
	for _, tk := range tasks {
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/status", pid, tk.Name()))
		if err != nil {
			return false
		}
		for _, line := range strings.Split(string(data), "\n") {
			if v, ok := strings.CutPrefix(line, "TracerPid:"); ok && strings.TrimSpace(v) == "0" {
				return false
			}
		}
	}
	return true
}

// tracedWrite is one write-ish syscall of the shim or of a runtime command it ran.
type tracedWrite struct {
	pid     int
	who     string // "shim" or the runtime command line
	syscall string
	path    string
	failed  bool // the call failed (an attempt)
}

func (w tracedWrite) String() string {
	s := fmt.Sprintf("%s %s (%s)", w.syscall, w.path, w.who)
	if w.failed {
		s += " [failed]"
	}
	return s
}

type traceStats struct{ lines, pids, skipped int }

var (
	straceLine  = regexp.MustCompile(`^(\d+)\s+(.*)$`)
	straceCall  = regexp.MustCompile(`^([a-z0-9_]+)\((.*)\)\s+=\s+(-?\d+|\?)(.*)$`)
	straceFdArg = regexp.MustCompile(`^(AT_FDCWD|\d+)(?:<(.*)>)?$`)
	straceRet   = regexp.MustCompile(`^<(.*)>`)
)

// tracedWrites parses an `strace -f -y` log of the shim daemon and returns the write-ish
// file syscalls made by the shim's threads and by the runtime commands it ran (see
// TestShimWritesOnlyItsOwnFiles for who counts).
func tracedWrites(t *testing.T, path string, shimPid int) ([]tracedWrite, traceStats) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// Join "<unfinished ...>" calls with their "<... name resumed>" rest (per pid).
	type call struct {
		pid  int
		text string
	}
	var calls []call
	pending := map[int]string{}
	var stats traceStats
	for _, line := range strings.Split(string(data), "\n") {
		m := straceLine.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		stats.lines++
		pid, _ := strconv.Atoi(m[1])
		rest := m[2]
		if strings.HasPrefix(rest, "+++") || strings.HasPrefix(rest, "---") {
			continue
		}
		if p, ok := strings.CutSuffix(rest, " <unfinished ...>"); ok {
			pending[pid] = p
			continue
		}
		if strings.HasPrefix(rest, "<... ") {
			i := strings.Index(rest, " resumed>")
			if i < 0 {
				continue
			}
			rest = pending[pid] + rest[i+len(" resumed>"):]
			delete(pending, pid)
		}
		calls = append(calls, call{pid, rest})
	}

	// Who is who: the shim's threads (and the children it forks until they exec) are the
	// shim; a runc other than `runc init` is a runtime command; `runc init` and everything
	// it starts is the container.
	const shim, container = "shim", "container"
	who := map[int]string{shimPid: shim}
	if tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", shimPid)); err == nil {
		for _, tk := range tasks {
			if tid, err := strconv.Atoi(tk.Name()); err == nil {
				who[tid] = shim
			}
		}
	}
	// Pass 1: parents (clone results may be printed after the child's first calls).
	parent := map[int]int{}
	for _, c := range calls {
		m := straceCall.FindStringSubmatch(c.text)
		if m == nil {
			continue
		}
		switch m[1] {
		case "clone", "clone3", "fork", "vfork":
			if child, err := strconv.Atoi(m[3]); err == nil && child > 0 {
				parent[child] = c.pid
			}
		}
	}
	var roleOf func(pid int, depth int) string
	roleOf = func(pid int, depth int) string {
		if r, ok := who[pid]; ok {
			return r
		}
		if p, ok := parent[pid]; ok && depth < 64 {
			return roleOf(p, depth+1)
		}
		return "unknown"
	}
	var out []tracedWrite
	seen := map[int]bool{}
	for _, c := range calls {
		seen[c.pid] = true
		m := straceCall.FindStringSubmatch(c.text)
		if m == nil {
			continue
		}
		name, args, ret, retRest := m[1], splitArgs(m[2]), m[3], m[4]
		if (name == "execve" || name == "execveat") && ret == "0" {
			if roleOf(c.pid, 0) != container { // what the container runs stays the container's
				who[c.pid] = execRole(args)
			}
			continue
		}
		role := roleOf(c.pid, 0)
		if role == container {
			stats.skipped++
			continue
		}
		if role == "unknown" {
			role = "unknown process (not a descendant of the shim in the trace)"
		}
		for _, p := range writePaths(name, args, ret, retRest) {
			out = append(out, tracedWrite{pid: c.pid, who: role, syscall: name, path: p, failed: strings.HasPrefix(ret, "-")})
		}
	}
	stats.pids = len(seen)
	return out, stats
}

// execRole names what a process became by execve: the container's side (`runc init`), a
// runtime command ("runc create", ...), or another program the shim ran.
func execRole(args []string) string {
	if len(args) < 2 {
		return "exec " + strings.Join(args, " ")
	}
	var argv []string
	for _, a := range splitArgs(strings.TrimSuffix(strings.TrimPrefix(args[1], "["), "]")) {
		argv = append(argv, unquote(a))
	}
	if len(argv) == 0 {
		return "exec " + unquote(args[0])
	}
	// The subcommand: the first argument that is neither a flag nor a flag's value.
	valued := map[string]bool{"--root": true, "--log": true, "--log-format": true, "--criu": true, "--rootless": true}
	for i := 1; i < len(argv); i++ {
		a := argv[i]
		if valued[a] {
			i++
			continue
		}
		if strings.HasPrefix(a, "-") {
			continue
		}
		if a == "init" {
			return "container"
		}
		return filepath.Base(argv[0]) + " " + a
	}
	return filepath.Base(argv[0])
}

// writePaths returns the paths a syscall writes (creates, truncates, opens for writing,
// removes, renames, links), resolved against its dirfd, or nothing for a read-only call.
func writePaths(name string, args []string, ret, retRest string) []string {
	arg := func(i int) string {
		if i < len(args) {
			return args[i]
		}
		return ""
	}
	at := func(fdArg, pathArg string) string {
		p := unquote(pathArg)
		if filepath.IsAbs(p) {
			return filepath.Clean(p)
		}
		if m := straceFdArg.FindStringSubmatch(fdArg); m != nil && m[2] != "" {
			return filepath.Join(m[2], p)
		}
		return "?/" + p
	}
	writeFlags := func(flags string) bool {
		for _, f := range []string{"O_WRONLY", "O_RDWR", "O_CREAT", "O_TRUNC", "O_APPEND", "O_TMPFILE"} {
			if strings.Contains(flags, f) {
				return true
			}
		}
		return false
	}
	// A successful open names the file it opened (-y): the path that was really written.
	opened := func(fallback string) string {
		if m := straceRet.FindStringSubmatch(strings.TrimSpace(retRest)); m != nil && ret != "-1" {
			return m[1]
		}
		return fallback
	}
	switch name {
	case "open":
		if writeFlags(arg(1)) {
			return []string{opened(at("AT_FDCWD", arg(0)))}
		}
	case "openat", "openat2":
		if writeFlags(arg(2)) {
			return []string{opened(at(arg(0), arg(1)))}
		}
	case "creat", "mkdir", "mknod", "unlink":
		return []string{at("AT_FDCWD", arg(0))}
	case "mkdirat", "mknodat", "unlinkat":
		return []string{at(arg(0), arg(1))}
	case "rename", "link", "symlink":
		if name == "symlink" {
			return []string{at("AT_FDCWD", arg(1))}
		}
		return []string{at("AT_FDCWD", arg(0)), at("AT_FDCWD", arg(1))}
	case "renameat", "renameat2", "linkat":
		if name == "linkat" {
			return []string{at(arg(2), arg(3))}
		}
		return []string{at(arg(0), arg(1)), at(arg(2), arg(3))}
	case "symlinkat":
		return []string{at(arg(1), arg(2))}
	case "mount":
		return []string{at("AT_FDCWD", arg(1))}
	case "umount2":
		return []string{at("AT_FDCWD", arg(0))}
	}
	return nil
}

// splitArgs splits strace's argument list at top-level commas (outside quotes, brackets,
// braces and the <...> fd annotations).
func splitArgs(s string) []string {
	var out []string
	depth, start := 0, 0
	inQuote, esc := false, false
	for i := 0; i < len(s); i++ {
		ch := s[i]
		switch {
		case esc:
			esc = false
		case inQuote && ch == '\\':
			esc = true
		case ch == '"':
			inQuote = !inQuote
		case inQuote:
		case ch == '[' || ch == '{' || ch == '(' || ch == '<':
			depth++
		case ch == ']' || ch == '}' || ch == ')' || ch == '>':
			depth--
		case ch == ',' && depth == 0:
			out = append(out, strings.TrimSpace(s[start:i]))
			start = i + 1
		}
	}
	return append(out, strings.TrimSpace(s[start:]))
}

// unquote undoes strace's quoting of a path argument (and drops a "..." truncation mark).
func unquote(s string) string {
	s = strings.TrimSuffix(s, "...")
	if u, err := strconv.Unquote(s); err == nil {
		return u
	}
	return strings.Trim(s, `"`)
}

// crunOwnWrite is a write crun makes that runc makes nowhere the trace
// counts: its scratch mount point (/tmp/crun.XXXXXX, made, mounted and
// removed within each command), and the container's root set up in the
// container's own mount namespace (made private, pivoted, the old root
// unmounted), which runc does in `runc init`, the container's side, and
// crun in the child of `crun create` before it execs the container.
func crunOwnWrite(w tracedWrite) bool {
	if strings.HasPrefix(w.path, "/tmp/crun.") {
		return true
	}
	return (w.syscall == "mount" || w.syscall == "umount2") && (w.path == "/" || w.path == "?/.")
}

// underAny reports whether path is one of dirs or below one of them.
func underAny(path string, dirs []string) bool {
	for _, d := range dirs {
		if path == d || strings.HasPrefix(path, d+"/") {
			return true
		}
	}
	return false
}
