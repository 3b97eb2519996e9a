package sandbox

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/example/containerd-shim-example-v2/bundle"
	"github.com/example/containerd-shim-example-v2/holder"
)

// Where containerd keeps things, as the shim finds them from the sandbox's
// bundle. containerd's "shim" sandbox controller makes the bundle at
// <state>/io.containerd.sandbox.controller.v1.shim/<namespace>/<id>, with a
// `work` link to the same place under <root>. Its CRI plugin keeps each pod's
// files under <root>/io.containerd.grpc.v1.cri/sandboxes/<id> (hostname,
// hosts, resolv.conf) and <state>/io.containerd.grpc.v1.cri/sandboxes/<id>
// (shm), and mounts each into every container of the pod if, and only if,
// it exists: in shim mode nobody but the shim creates them.
const (
	controllerDir = "io.containerd.sandbox.controller.v1.shim"
	criDir        = "io.containerd.grpc.v1.cri"
	sandboxesDir  = "sandboxes"
	workLink      = "work"
)

// Pod files (CRI's names).
const (
	hostnameFile = "hostname"
	hostsFile    = "hosts"
	resolvFile   = "resolv.conf"
	shmDir       = "shm"
)

// shmSize is the size of a pod's /dev/shm: CRI's own default for a pause
// container's (Kubernetes has no per-pod setting; pods wanting more mount a
// memory-backed emptyDir).
const shmSize = 64 << 20

// The node's files a pod starts from.
var (
	nodeHosts  = "/etc/hosts"
	nodeResolv = "/etc/resolv.conf"
)

// recordFile, in the sandbox's bundle, lists everything the shim made for
// the pod outside the bundle, written before each is made: `delete` undoes
// it all after a shim was killed (see Cleanup).
const recordFile = "sandbox.json"

// record is what a pod owns outside its bundle.
type record struct {
	Dirs   []string `json:"dirs,omitempty"`   // directories made (removed when empty)
	Files  []string `json:"files,omitempty"`  // files written
	Mounts []string `json:"mounts,omitempty"` // mounts made (unmounted)
	Cgroup string   `json:"cgroup,omitempty"` // the holder's cgroup (removed)
}

// criDirs finds CRI's directories for a pod from its bundle; ok is false
// for a bundle elsewhere (a caller other than containerd's controller), in
// which case the pod gets no files and containers keep their image's.
func criDirs(bundlePath, id string) (root, state string, ok bool) {
	if filepath.Base(bundlePath) != id || filepath.Base(filepath.Dir(filepath.Dir(bundlePath))) != controllerDir {
		return "", "", false
	}
	work, err := os.Readlink(filepath.Join(bundlePath, workLink))
	if err != nil || !filepath.IsAbs(work) || filepath.Base(work) != id {
		return "", "", false
	}
	stateTop := filepath.Dir(filepath.Dir(filepath.Dir(bundlePath)))
	rootTop := filepath.Dir(filepath.Dir(filepath.Dir(work)))
	return filepath.Join(rootTop, criDir, sandboxesDir, id), filepath.Join(stateTop, criDir, sandboxesDir, id), true
}

// files makes a pod's files, after recording them.
type files struct {
	bundle string
	rec    record
	// cleaned: cleanup removed everything recorded, the record too; a
	// later cleanup (a ShutdownSandbox repeated) must not remove the record
	// a new pod of the same bundle has written since. save clears it.
	cleaned bool
}

func (f *files) save() error {
	f.cleaned = false
	data, err := json.Marshal(f.rec)
	if err != nil {
		return err
	}
	return bundle.WriteFileAtomic(filepath.Join(f.bundle, recordFile), data, 0o600)
}

// setUp makes what a pod needs outside its bundle: with CRI's directories
// (criDirs), the pod's hostname, hosts, resolv.conf and /dev/shm for CRI to
// mount into its containers, as CRI's pause-container mode makes them. All
// of it, and the holder's cgroup the caller set in rec.Cgroup, is recorded
// in one write before anything is made (a record names nothing that was not
// made by the pod: directories that exist already are not in it).
func (f *files) setUp(cfg PodConfig, root, state string, withFiles bool) error {
	type file struct {
		path string
		data []byte
	}
	type dir struct {
		path string
		perm os.FileMode
	}
	var (
		dirs  []dir
		files []file
		shm   string
	)
	if withFiles {
		hostname := cfg.Hostname
		if hostname == "" {
			var err error
			if hostname, err = os.Hostname(); err != nil {
				return fmt.Errorf("node hostname: %w", err)
			}
		}
		hosts, err := os.ReadFile(nodeHosts)
		if err != nil {
			return fmt.Errorf("pod hosts file from %s: %w", nodeHosts, err)
		}
		resolv, err := resolvConf(cfg)
		if err != nil {
			return err
		}
		dirs = append(dirs, dir{root, 0o755})
		files = []file{
			{filepath.Join(root, hostnameFile), []byte(hostname + "\n")},
			{filepath.Join(root, hostsFile), hosts},
			{filepath.Join(root, resolvFile), resolv},
		}
		if cfg.IPC != ModeNode { // otherwise CRI gives the pod the node's /dev/shm
			shm = filepath.Join(state, shmDir)
			dirs = append(dirs, dir{state, 0o755}, dir{shm, 0o700})
		}
	}
	for _, d := range dirs {
		if _, err := os.Stat(d.path); err != nil {
			f.rec.Dirs = append(f.rec.Dirs, d.path)
		}
	}
	for _, fl := range files {
		f.rec.Files = append(f.rec.Files, fl.path)
	}
	if shm != "" {
		f.rec.Mounts = append(f.rec.Mounts, shm)
	}
	if len(f.rec.Dirs)+len(f.rec.Files)+len(f.rec.Mounts) == 0 && f.rec.Cgroup == "" {
		return nil
	}
	if err := f.save(); err != nil {
		return err
	}
	for _, d := range dirs {
		if err := os.MkdirAll(d.path, d.perm); err != nil {
			return fmt.Errorf("create %s: %w", d.path, err)
		}
	}
	for _, fl := range files {
		if err := os.WriteFile(fl.path, fl.data, 0o644); err != nil {
			return fmt.Errorf("pod file: %w", err)
		}
	}
	if shm != "" {
		if err := unix.Mount("shm", shm, "tmpfs", unix.MS_NOEXEC|unix.MS_NOSUID|unix.MS_NODEV,
			fmt.Sprintf("mode=1777,size=%d", shmSize)); err != nil {
			return fmt.Errorf("mount the pod's shm at %s: %w", shm, err)
		}
	}
	return nil
}

// resolvConf is the pod's resolv.conf: its DNSConfig, or the node's file
// when it has none, as CRI's pause-container mode writes it. An empty
// DNSConfig gives an empty file there too (kubelet sends one for a pod
// that is to have no DNS, as with --resolv-conf=""); only a missing one
// means the node's.
func resolvConf(cfg PodConfig) ([]byte, error) {
	if !cfg.HasDNS {
		data, err := os.ReadFile(nodeResolv)
		if err != nil {
			return nil, fmt.Errorf("pod resolv.conf from %s: %w", nodeResolv, err)
		}
		return data, nil
	}
	var b strings.Builder
	if len(cfg.DNS.Searches) > 0 {
		fmt.Fprintf(&b, "search %s\n", strings.Join(cfg.DNS.Searches, " "))
	}
	for _, s := range cfg.DNS.Servers {
		fmt.Fprintf(&b, "nameserver %s\n", s)
	}
	if len(cfg.DNS.Options) > 0 {
		fmt.Fprintf(&b, "options %s\n", strings.Join(cfg.DNS.Options, " "))
	}
	return []byte(b.String()), nil
}

// unmountShm releases the pod's /dev/shm (at stop, as CRI does for a pause
// container's): its contents go with the pod's containers.
func (f *files) unmountShm() error {
	var errs []error
	for _, m := range f.rec.Mounts {
		errs = append(errs, unmount(m))
	}
	return errors.Join(errs...)
}

// Cleanup undoes everything the pod's record lists and removes the record.
// The shim calls it when a pod is shut down; `delete` calls it for a bundle
// whose shim died. A bundle without a record (every task's) is left as is.
func Cleanup(bundlePath string) error {
	data, err := os.ReadFile(filepath.Join(bundlePath, recordFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("pod record: %w", err)
	}
	f := &files{bundle: bundlePath}
	if err := json.Unmarshal(data, &f.rec); err != nil {
		return fmt.Errorf("pod record %s: %w", filepath.Join(bundlePath, recordFile), err)
	}
	return f.cleanup()
}

// cleanup removes what the record lists, deepest first, then the record.
func (f *files) cleanup() error {
	if f.cleaned {
		return nil
	}
	var errs []error
	for _, m := range f.rec.Mounts {
		errs = append(errs, unmount(m))
	}
	for _, p := range f.rec.Files {
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	for i := len(f.rec.Dirs) - 1; i >= 0; i-- {
		err := os.Remove(f.rec.Dirs[i])
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	if f.rec.Cgroup != "" {
		errs = append(errs, holder.RemoveCgroup(holder.CgroupRoot, f.rec.Cgroup))
	}
	if err := errors.Join(errs...); err != nil {
		return err // the record stays for another attempt
	}
	if err := os.Remove(filepath.Join(f.bundle, recordFile)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	f.rec = record{}
	f.cleaned = true
	return nil
}

// unmount detaches a mount the pod made; one already gone is fine.
func unmount(path string) error {
	err := unix.Unmount(path, unix.MNT_DETACH)
	if err == nil || errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOENT) {
		return nil
	}
	return fmt.Errorf("unmount %s: %w", path, err)
}
