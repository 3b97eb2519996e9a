package harness

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Proc is a process found in /proc.
type Proc struct {
	Pid  int
	Args []string
}

func (p Proc) String() string { return fmt.Sprintf("pid %d: %s", p.Pid, strings.Join(p.Args, " ")) }

// flagValue returns the value of a Go-style single-dash flag ("-name value" or
// "-name=value") in args, or "".
func flagValue(args []string, name string) string {
	for i, a := range args {
		if a == "-"+name || a == "--"+name {
			if i+1 < len(args) {
				return args[i+1]
			}
			return ""
		}
		for _, p := range []string{"-" + name + "=", "--" + name + "="} {
			if strings.HasPrefix(a, p) {
				return strings.TrimPrefix(a, p)
			}
		}
	}
	return ""
}

// Processes lists every process whose command line satisfies match, leaving
// out any whose parent is listed too: between fork and exec a child shares
// its parent's memory, so its command line reads as the parent's (a shim
// forks for each runtime call, and once at its start for Go's pidfd check).
// Counting such a child as a second shim would be wrong; a leak check still
// finds its parent.
func Processes(match func(args []string) bool) []Proc {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	self := os.Getpid()
	var out []Proc
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		raw, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || len(raw) == 0 {
			continue // gone, or a kernel thread / zombie
		}
		args := strings.Split(strings.TrimRight(string(raw), "\x00"), "\x00")
		if match(args) {
			out = append(out, Proc{Pid: pid, Args: args})
		}
	}
	return withoutChildren(out)
}

// withoutChildren drops the processes whose parent is in procs.
func withoutChildren(procs []Proc) []Proc {
	if len(procs) < 2 {
		return procs
	}
	listed := make(map[int]bool, len(procs))
	for _, p := range procs {
		listed[p.Pid] = true
	}
	out := procs[:0]
	for _, p := range procs {
		if st, err := ReadProcStat(p.Pid); err != nil || !listed[st.PPid] {
			out = append(out, p)
		}
	}
	return out
}

// ShimProcesses lists live shim processes (any containerd-shim-* binary) started by this
// daemon, i.e. whose -address is this daemon's socket. ns and id filter on -namespace and
// -id when not empty (for a grouped shim -id is the group's first container).
func (d *Daemon) ShimProcesses(ns, id string) []Proc {
	return Processes(func(args []string) bool {
		if !strings.HasPrefix(filepath.Base(args[0]), "containerd-shim") {
			return false
		}
		if flagValue(args, "address") != d.Address {
			return false
		}
		if ns != "" && flagValue(args, "namespace") != ns {
			return false
		}
		if id != "" && flagValue(args, "id") != id {
			return false
		}
		return true
	})
}

func procAlive(pid int) bool {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// A zombie is as good as gone for leak purposes: field 3 is the state.
	s := string(data)
	if i := strings.LastIndexByte(s, ')'); i >= 0 && i+2 < len(s) {
		return s[i+2] != 'Z'
	}
	return true
}

// PidExists reports whether a (non-zombie) process with this host PID exists.
func PidExists(pid int) bool { return pid > 0 && procAlive(pid) }

func waitGone(procs []Proc, timeout time.Duration) {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		alive := false
		for _, p := range procs {
			if procAlive(p.Pid) {
				alive = true
			}
		}
		if !alive {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Mount is one line of /proc/self/mountinfo.
type Mount struct {
	Point  string
	FSType string
	Source string
}

// unescapeMountinfo undoes the octal escapes (\040 etc.) the kernel uses in mountinfo.
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// MountsUnder lists the mounts (of this mount namespace) at or below dir.
func MountsUnder(dir string) []Mount {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	defer f.Close()
	dir = filepath.Clean(dir)
	var out []Mount
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		mp := unescapeMountinfo(fields[4])
		if mp != dir && !strings.HasPrefix(mp, dir+"/") {
			continue
		}
		m := Mount{Point: mp}
		for i, f := range fields {
			if f == "-" && i+2 < len(fields) {
				m.FSType = fields[i+1]
				m.Source = unescapeMountinfo(fields[i+2])
				break
			}
		}
		out = append(out, m)
	}
	return out
}

// UnmountUnder unmounts everything mounted at or below dir, deepest first (lazily, so a
// busy mount cannot block teardown).
func UnmountUnder(dir string) error {
	for attempt := 0; attempt < 5; attempt++ {
		ms := MountsUnder(dir)
		if len(ms) == 0 {
			return nil
		}
		sort.Slice(ms, func(i, j int) bool {
			return strings.Count(ms[i].Point, "/") > strings.Count(ms[j].Point, "/")
		})
		for _, m := range ms {
			_ = unix.Unmount(m.Point, unix.MNT_DETACH)
		}
	}
	if ms := MountsUnder(dir); len(ms) > 0 {
		return fmt.Errorf("could not unmount %d mounts under %s, e.g. %s", len(ms), dir, ms[0].Point)
	}
	return nil
}

// BundleDir is the task's bundle in this daemon's state dir.
func (d *Daemon) BundleDir(ns, id string) string {
	return filepath.Join(d.State, "io.containerd.runtime.v2.task", ns, id)
}

// RuncStateDir is runc's state directory for a container of a runc-based shim.
func RuncStateDir(ns, id string) string { return filepath.Join(RuncRoot, ns, id) }

// ShimSocketPath is the socket the stock shim (and a shim that copies its naming scheme)
// creates for a task: <ShimSocketDir>/<hex sha256 of "<containerd address>/<ns>/<id>">.
func (d *Daemon) ShimSocketPath(ns, id string) string {
	sum := sha256.Sum256([]byte(filepath.Join(d.Address, ns, id)))
	return filepath.Join(ShimSocketDir, hex.EncodeToString(sum[:]))
}

// ShimDebugSocketPath is the pprof socket the 2.x stock shim adds when started with -debug:
// the same scheme over "<containerd address>/<ns>/<id>/debug".
func (d *Daemon) ShimDebugSocketPath(ns, id string) string {
	sum := sha256.Sum256([]byte(filepath.Join(d.Address, ns, id, "debug")))
	return filepath.Join(ShimSocketDir, hex.EncodeToString(sum[:]))
}

// removeShimSockets removes the sockets a shim killed by the harness could not remove.
//
// A shim that groups tasks names its socket otherwise (after the group), so the sockets
// named in the daemon's bundles (their `address` files) and in the shims' own `-socket`
// flags go too: every shim of this daemon is dead by now, and their socket names are
// derived from this daemon's address, so no other daemon's shim can own them.
func (d *Daemon) removeShimSockets(procs []Proc) {
	for _, p := range procs {
		ns, id := flagValue(p.Args, "namespace"), flagValue(p.Args, "id")
		removeSocket(d.ShimSocketPath(ns, id))
		removeSocket(d.ShimDebugSocketPath(ns, id))
		if s := flagValue(p.Args, "socket"); s != "" {
			removeSocket(strings.TrimPrefix(s, "unix://"))
		}
	}
	files, _ := filepath.Glob(filepath.Join(d.State, "io.containerd.runtime.v2.task", "*", "*", "address"))
	for _, f := range files {
		if addr, err := os.ReadFile(f); err == nil {
			removeSocket(strings.TrimPrefix(strings.TrimSpace(string(addr)), "unix://"))
		}
	}
}

// Leftovers describes what is left of a task (or, with id "", of a whole namespace) after
// it should have been removed: shim processes, mounts under the daemon's dirs, runc state,
// shim socket, bundle. An empty result means nothing leaked.
func (d *Daemon) Leftovers(ns, id string) []string {
	var out []string
	for _, p := range d.ShimProcesses(ns, id) {
		if procAlive(p.Pid) {
			out = append(out, "shim process "+p.String())
		}
	}
	sub := "/" + ns + "/"
	if id != "" {
		sub = "/" + ns + "/" + id + "/"
	}
	for _, m := range MountsUnder(d.Base) {
		if strings.Contains(m.Point+"/", sub) {
			out = append(out, fmt.Sprintf("mount %s (%s)", m.Point, m.FSType))
		}
	}
	if id != "" {
		for _, p := range []string{RuncStateDir(ns, id), d.ShimSocketPath(ns, id), d.ShimDebugSocketPath(ns, id), d.BundleDir(ns, id)} {
			if _, err := os.Lstat(p); err == nil {
				out = append(out, "path "+p)
			}
		}
	} else {
		// <RuncRoot>/<ns> is shared by every daemon on the host for a fixed name
		// ("moby", "k8s.io"): only this daemon's containers there are its leftovers.
		runcDir := filepath.Join(RuncRoot, ns)
		entries, _ := os.ReadDir(runcDir)
		for _, e := range entries {
			if p := filepath.Join(runcDir, e.Name()); d.ownsRuncState(p) {
				out = append(out, "path "+p)
			}
		}
		bundles := filepath.Join(d.State, "io.containerd.runtime.v2.task", ns)
		entries, _ = os.ReadDir(bundles)
		for _, e := range entries {
			out = append(out, "path "+filepath.Join(bundles, e.Name()))
		}
	}
	return out
}

// WaitNoLeftovers polls Leftovers until it is empty or timeout passes (shims exit shortly
// after the Shutdown call, asynchronously) and returns the last non-empty result.
func (d *Daemon) WaitNoLeftovers(ns, id string, timeout time.Duration) []string {
	return pollUntilEmpty(timeout, func() []string { return d.Leftovers(ns, id) })
}

// pollUntilEmpty calls list every 100 ms until it returns nothing or timeout passes, and
// returns its last answer.
func pollUntilEmpty(timeout time.Duration, list func() []string) []string {
	deadline := time.Now().Add(timeout)
	for {
		l := list()
		if len(l) == 0 || time.Now().After(deadline) {
			return l
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// KillShims SIGKILLs this daemon's shim processes for ns/id (see ShimProcesses) and waits
// briefly for them to go. Used by cleanup after a leak was reported.
func (d *Daemon) KillShims(ns, id string) {
	procs := d.ShimProcesses(ns, id)
	for _, p := range procs {
		_ = syscall.Kill(p.Pid, syscall.SIGKILL)
	}
	waitGone(procs, 5*time.Second)
	d.removeShimSockets(procs)
}

// socketsIn lists the names in dir.
func socketsIn(dir string) map[string]bool {
	out := map[string]bool{}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		out[e.Name()] = true
	}
	return out
}

// removeDeadShimSockets removes shim sockets that appeared while this daemon ran and that
// nobody listens on any more. The 2.x stock shim leaves its socket behind when it serves a
// group of tasks; this shim removes its own. A socket younger than two seconds is left
// alone: it may belong to another daemon's shim that has bound it but not yet listens.
func (d *Daemon) removeDeadShimSockets() {
	entries, _ := os.ReadDir(ShimSocketDir)
	for _, e := range entries {
		if d.socketsAtStart[e.Name()] {
			continue
		}
		path := filepath.Join(ShimSocketDir, e.Name())
		info, err := os.Lstat(path)
		if err != nil || info.Mode()&os.ModeSocket == 0 || time.Since(info.ModTime()) < 2*time.Second {
			continue
		}
		c, err := net.DialTimeout("unix", path, 200*time.Millisecond)
		if err == nil {
			c.Close()
			continue
		}
		if errors.Is(err, syscall.ECONNREFUSED) {
			_ = os.Remove(path)
		}
	}
}
