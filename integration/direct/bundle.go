package direct

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// Files of a bundle, as containerd lays it out (PROTOCOL.md §2.4).
const (
	SpecFile     = "config.json"
	LogFIFO      = "log"      // the shim's own log; containerd holds it open and copies it
	AddressFile  = "address"  // written by `start`
	ShimPidFile  = "shim.pid" // written at Create
	shimLogLimit = 256 << 10  // the tail of a shim's log kept for a failing test
)

// SpecConfig is what varies between the containers of the tests.
type SpecConfig struct {
	Args        []string
	CgroupsPath string
	MemoryLimit int64             // bytes; 0 for none
	Annotations map[string]string // such as a group annotation
}

// NewSpec returns the OCI spec of a test container: the shared busybox root
// (read-only; /tmp is a tmpfs of its own), fresh PID, mount, IPC, UTS and
// network namespaces, root user, a default capability set, and its own
// cgroup.
func NewSpec(cfg SpecConfig) *specs.Spec {
	caps := []string{"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
		"CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT",
		"CAP_KILL", "CAP_AUDIT_WRITE"}
	s := &specs.Spec{
		Version:  specs.Version,
		Process:  NewProcess(cfg.Args),
		Root:     &specs.Root{Path: tools.rootfs, Readonly: true},
		Hostname: "direct",
		Mounts: []specs.Mount{
			{Destination: "/proc", Type: "proc", Source: "proc", Options: []string{"nosuid", "noexec", "nodev"}},
			{Destination: "/dev", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "strictatime", "mode=755", "size=65536k"}},
			{Destination: "/dev/pts", Type: "devpts", Source: "devpts", Options: []string{"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"}},
			{Destination: "/dev/shm", Type: "tmpfs", Source: "shm", Options: []string{"nosuid", "noexec", "nodev", "mode=1777", "size=65536k"}},
			{Destination: "/dev/mqueue", Type: "mqueue", Source: "mqueue", Options: []string{"nosuid", "noexec", "nodev"}},
			{Destination: "/sys", Type: "sysfs", Source: "sysfs", Options: []string{"nosuid", "noexec", "nodev", "ro"}},
			{Destination: "/tmp", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "nodev", "mode=1777", "size=16m"}},
		},
		Linux: &specs.Linux{
			CgroupsPath: cfg.CgroupsPath,
			Resources: &specs.LinuxResources{
				Devices: []specs.LinuxDeviceCgroup{{Allow: false, Access: "rwm"}},
			},
			Namespaces: []specs.LinuxNamespace{
				{Type: specs.PIDNamespace}, {Type: specs.IPCNamespace}, {Type: specs.UTSNamespace},
				{Type: specs.MountNamespace}, {Type: specs.NetworkNamespace},
			},
			MaskedPaths:   []string{"/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list", "/proc/sched_debug", "/sys/firmware", "/proc/scsi"},
			ReadonlyPaths: []string{"/proc/asound", "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"},
		},
	}
	s.Process.Capabilities = &specs.LinuxCapabilities{Bounding: caps, Effective: caps, Permitted: caps}
	s.Annotations = cfg.Annotations
	if cfg.MemoryLimit > 0 {
		// Memory plus swap capped at the same value: on a host with swap the
		// container must hit the limit, not page out.
		limit, swap := cfg.MemoryLimit, cfg.MemoryLimit
		s.Linux.Resources.Memory = &specs.LinuxMemory{Limit: &limit, Swap: &swap}
	}
	return s
}

// NewProcess returns a process running args as root in /, as an init or an
// exec (Exec's spec is a Process).
func NewProcess(args []string) *specs.Process {
	return &specs.Process{
		Args:            args,
		Env:             []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root"},
		Cwd:             "/",
		NoNewPrivileges: true,
		Rlimits:         []specs.POSIXRlimit{{Type: "RLIMIT_NOFILE", Hard: 1024, Soft: 1024}},
	}
}

// Bundle is a task's bundle directory, anywhere on disk (here t.TempDir()),
// holding what containerd would put there before `start`.
type Bundle struct {
	Dir  string
	Spec *specs.Spec
	log  *shimLog
}

// NewBundle writes config.json and creates the `log` FIFO, opened the way
// containerd opens it (read-write, non-blocking, so the shim's non-blocking
// writer always finds a reader); what the shim logs is kept for failing
// tests.
func NewBundle(t testing.TB, dir string, spec *specs.Spec) *Bundle {
	t.Helper()
	data, err := json.MarshalIndent(spec, "", "  ")
	if err != nil {
		t.Fatalf("encode spec: %v", err)
	}
	if err := os.WriteFile(filepath.Join(dir, SpecFile), data, 0o644); err != nil {
		t.Fatalf("write spec: %v", err)
	}
	b := &Bundle{Dir: dir, Spec: spec}
	if err := syscall.Mkfifo(filepath.Join(dir, LogFIFO), 0o700); err != nil {
		t.Fatalf("create log FIFO: %v", err)
	}
	f, err := os.OpenFile(filepath.Join(dir, LogFIFO), os.O_RDWR|syscall.O_NONBLOCK, 0)
	if err != nil {
		t.Fatalf("open log FIFO: %v", err)
	}
	b.log = &shimLog{f: f, done: make(chan struct{})}
	go b.log.copy()
	t.Cleanup(func() {
		b.log.close()
		if t.Failed() {
			t.Logf("shim log of bundle %s:\n%s", dir, b.ShimLog())
		}
	})
	return b
}

// ShimLog returns (the tail of) what the shim wrote to the bundle's log.
func (b *Bundle) ShimLog() string { return b.log.String() }

// WaitShimLogCount waits until the shim's log holds substr n times, or
// timeout passes, and returns the count last seen. A line reaches the log
// through the FIFO and this package's reader goroutine, so it may come a
// little after whatever the shim answered once it had logged it, or
// answered just before logging it.
func (b *Bundle) WaitShimLogCount(substr string, n int, timeout time.Duration) int {
	deadline := time.Now().Add(timeout)
	for {
		got := strings.Count(b.ShimLog(), substr)
		if got >= n || time.Now().After(deadline) {
			return got
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// shimLog reads the log FIFO into a bounded buffer.
type shimLog struct {
	f    *os.File
	done chan struct{}
	mu   sync.Mutex
	buf  bytes.Buffer
}

func (l *shimLog) copy() {
	defer close(l.done)
	p := make([]byte, 32<<10)
	for {
		n, err := l.f.Read(p)
		if n > 0 {
			l.mu.Lock()
			l.buf.Write(p[:n])
			if over := l.buf.Len() - shimLogLimit; over > 0 {
				l.buf.Next(over)
			}
			l.mu.Unlock()
		}
		if err != nil {
			if !errors.Is(err, os.ErrClosed) {
				l.mu.Lock()
				l.buf.WriteString("[log read: " + err.Error() + "]\n")
				l.mu.Unlock()
			}
			return
		}
	}
}

func (l *shimLog) close() {
	l.f.Close()
	<-l.done
}

func (l *shimLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}
