package process

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/example/containerd-shim-example-v2/bundle"
	"golang.org/x/sys/unix"
)

// Mount is one entry of the container's root filesystem, as the snapshotter
// described it.
type Mount struct {
	Type    string
	Source  string
	Target  string // below the rootfs; empty for the rootfs itself (containerd 1.6 never sets it)
	Options []string
}

// mountFlags maps mount(8) option words to flags; set=false clears the flag.
var mountFlags = map[string]struct {
	set  bool
	flag uintptr
}{
	"ro":          {true, unix.MS_RDONLY},
	"rw":          {false, unix.MS_RDONLY},
	"bind":        {true, unix.MS_BIND},
	"rbind":       {true, unix.MS_BIND | unix.MS_REC},
	"nosuid":      {true, unix.MS_NOSUID},
	"suid":        {false, unix.MS_NOSUID},
	"nodev":       {true, unix.MS_NODEV},
	"dev":         {false, unix.MS_NODEV},
	"noexec":      {true, unix.MS_NOEXEC},
	"exec":        {false, unix.MS_NOEXEC},
	"sync":        {true, unix.MS_SYNCHRONOUS},
	"async":       {false, unix.MS_SYNCHRONOUS},
	"noatime":     {true, unix.MS_NOATIME},
	"atime":       {false, unix.MS_NOATIME},
	"nodiratime":  {true, unix.MS_NODIRATIME},
	"diratime":    {false, unix.MS_NODIRATIME},
	"relatime":    {true, unix.MS_RELATIME},
	"norelatime":  {false, unix.MS_RELATIME},
	"strictatime": {true, unix.MS_STRICTATIME},
	"remount":     {true, unix.MS_REMOUNT},
	"defaults":    {false, 0},
}

// parseOptions splits option words into mount flags and the data string the
// filesystem receives (everything that is not a flag, such as lowerdir=...).
func parseOptions(options []string) (flags uintptr, data string) {
	var rest []string
	for _, o := range options {
		if f, ok := mountFlags[o]; ok {
			if f.set {
				flags |= f.flag
			} else {
				flags &^= f.flag
			}
			continue
		}
		rest = append(rest, o)
	}
	return flags, strings.Join(rest, ",")
}

// mountRootfs mounts every entry under rootfs in order. On failure it undoes
// what it mounted.
func mountRootfs(rootfs string, mounts []Mount) (err error) {
	mounted := 0
	defer func() {
		if err != nil && mounted > 0 {
			_ = unmountAll(rootfs)
		}
	}()
	for _, m := range mounts {
		target := rootfs
		if m.Target != "" {
			target = filepath.Join(rootfs, filepath.Clean("/"+m.Target))
			if err := os.MkdirAll(target, 0o755); err != nil {
				return fmt.Errorf("create mount point %s: %w", target, err)
			}
		}
		flags, data := parseOptions(m.Options)
		// A read-only bind takes two calls: the kernel ignores MS_RDONLY on
		// the first MS_BIND and only honours it on a remount.
		first := flags
		if flags&unix.MS_BIND != 0 {
			first &^= unix.MS_RDONLY
		}
		if err := unix.Mount(m.Source, target, m.Type, first, data); err != nil {
			return fmt.Errorf("mount %s (%s) on %s: %w", m.Source, m.Type, target, err)
		}
		mounted++
		if flags&unix.MS_BIND != 0 && flags&unix.MS_RDONLY != 0 {
			if err := unix.Mount("", target, "", flags|unix.MS_REMOUNT, ""); err != nil {
				return fmt.Errorf("remount %s read-only: %w", target, err)
			}
		}
	}
	return nil
}

// unmountBusyRetries and unmountBusyDelay bound how long a busy rootfs is
// retried before it is detached lazily: a process that just exited can hold
// it for a moment.
const (
	unmountBusyRetries = 50
	unmountBusyDelay   = 20 * time.Millisecond
)

// unmountAll unmounts everything stacked on target.
func unmountAll(target string) error {
	for busy := 0; ; {
		err := unix.Unmount(target, unix.UMOUNT_NOFOLLOW)
		switch {
		case err == nil:
			continue
		case errors.Is(err, unix.EINVAL), errors.Is(err, unix.ENOENT):
			return nil // nothing (more) mounted there
		case errors.Is(err, unix.EBUSY) && busy < unmountBusyRetries:
			busy++
			time.Sleep(unmountBusyDelay)
		case errors.Is(err, unix.EBUSY):
			return unix.Unmount(target, unix.MNT_DETACH|unix.UMOUNT_NOFOLLOW)
		default:
			return fmt.Errorf("unmount %s: %w", target, err)
		}
	}
}

// UnmountRootfs unmounts the bundle's rootfs; used by cleanup paths that have
// no Container (the shim's delete command).
func UnmountRootfs(dir string) error { return unmountAll(filepath.Join(dir, bundle.RootfsDir)) }
