package process

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"

	"github.com/example/containerd-shim-example-v2/internal/inroot"
	"github.com/example/containerd-shim-example-v2/internal/loopdev"
	"github.com/example/containerd-shim-example-v2/reaper"
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
// The words are those containerd's own mount code takes as flags: a word a
// snapshotter means as a flag must not reach the filesystem as data.
var mountFlags = map[string]struct {
	set  bool
	flag uintptr
}{
	"ro":            {true, unix.MS_RDONLY},
	"rw":            {false, unix.MS_RDONLY},
	"bind":          {true, unix.MS_BIND},
	"rbind":         {true, unix.MS_BIND | unix.MS_REC},
	"nosuid":        {true, unix.MS_NOSUID},
	"suid":          {false, unix.MS_NOSUID},
	"nodev":         {true, unix.MS_NODEV},
	"dev":           {false, unix.MS_NODEV},
	"noexec":        {true, unix.MS_NOEXEC},
	"exec":          {false, unix.MS_NOEXEC},
	"sync":          {true, unix.MS_SYNCHRONOUS},
	"async":         {false, unix.MS_SYNCHRONOUS},
	"noatime":       {true, unix.MS_NOATIME},
	"atime":         {false, unix.MS_NOATIME},
	"nodiratime":    {true, unix.MS_NODIRATIME},
	"diratime":      {false, unix.MS_NODIRATIME},
	"relatime":      {true, unix.MS_RELATIME},
	"norelatime":    {false, unix.MS_RELATIME},
	"strictatime":   {true, unix.MS_STRICTATIME},
	"nostrictatime": {false, unix.MS_STRICTATIME},
	"dirsync":       {true, unix.MS_DIRSYNC},
	"mand":          {true, unix.MS_MANDLOCK},
	"nomand":        {false, unix.MS_MANDLOCK},
	"remount":       {true, unix.MS_REMOUNT},
	"defaults":      {false, 0},
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

// propagationFlags are the option words that set a mount's propagation, as
// fstab and moby's mount package take them. containerd's own mount code has
// no such words (the stock shim hands them to the filesystem, which refuses
// them); a snapshotter's rootfs entry may still ask for one.
var propagationFlags = map[string]uintptr{
	"private":     unix.MS_PRIVATE,
	"shared":      unix.MS_SHARED,
	"slave":       unix.MS_SLAVE,
	"unbindable":  unix.MS_UNBINDABLE,
	"rprivate":    unix.MS_PRIVATE | unix.MS_REC,
	"rshared":     unix.MS_SHARED | unix.MS_REC,
	"rslave":      unix.MS_SLAVE | unix.MS_REC,
	"runbindable": unix.MS_UNBINDABLE | unix.MS_REC,
}

// takePropagation removes the propagation words from options and returns
// the flags they ask for (the last word wins), or 0.
func takePropagation(options []string) ([]string, uintptr) {
	var flags uintptr
	for _, o := range options {
		if f, ok := propagationFlags[o]; ok {
			flags = f
		}
	}
	if flags == 0 {
		return options, 0
	}
	isPropagation := func(o string) bool { _, ok := propagationFlags[o]; return ok }
	return slices.DeleteFunc(slices.Clone(options), isPropagation), flags
}

// takeWord removes every option that is exactly word, and reports whether
// there was one.
func takeWord(options []string, word string) ([]string, bool) {
	if !slices.Contains(options, word) {
		return options, false
	}
	return slices.DeleteFunc(slices.Clone(options), func(o string) bool { return o == word }), true
}

// classifyMountError marks a rootfs mount the kernel refused for what the
// request says (an unknown or empty filesystem type, a source or layer that
// is not there, an option it does not take) as the caller's mistake, unless
// the error has a class already.
func classifyMountError(err error) error {
	if errdefs.IsInvalidArgument(err) || errdefs.IsNotFound(err) || errdefs.IsFailedPrecondition(err) ||
		errdefs.IsResourceExhausted(err) || errdefs.IsPermissionDenied(err) {
		return err
	}
	for _, errno := range []unix.Errno{unix.ENODEV, unix.ENOENT, unix.ENOTDIR, unix.EINVAL, unix.ELOOP, unix.ENAMETOOLONG} {
		if errors.Is(err, errno) {
			return fmt.Errorf("%w: %w", err, errdefs.ErrInvalidArgument)
		}
	}
	return err
}

// mountRootfs mounts every entry under rootfs in order. On failure it undoes
// what it mounted. r reaps the holder of an ID mapping's user namespace
// (idmap.go), for mounts that ask for one.
func mountRootfs(rootfs string, mounts []Mount, r *reaper.Reaper) (err error) {
	mounted := 0
	defer func() {
		if err != nil && mounted > 0 {
			_ = unmountAll(rootfs)
		}
	}()
	for i, m := range mounts {
		if binary, subtype, ok := mountHelper(m.Type); ok {
			if m.Target != "" {
				err = mountWithHelperBelow(r, binary, subtype, m, rootfs, i)
			} else {
				err = mountWithHelper(r, binary, subtype, m, rootfs)
			}
			if err != nil {
				return fmt.Errorf("mount %s (%s) on %s: %w", m.Source, m.Type, filepath.Join(rootfs, m.Target), err)
			}
			mounted++
			continue
		}
		target, shown := rootfs, rootfs // shown: the target as error messages name it
		var point *inroot.Dir
		if m.Target != "" {
			shown = filepath.Join(rootfs, m.Target)
			// The mount point is inside what the earlier entries mounted: the
			// image's content, whose symlinks must not lead out of the rootfs.
			// The Target's own ".." are taken lexically first, as containerd
			// does (a missing "x" in "x/.." is then neither needed nor made).
			if point, err = inroot.Open(rootfs, filepath.Clean("/"+m.Target), true); err != nil {
				return fmt.Errorf("mount point: %w", err)
			}
			defer point.Close()
			target = inroot.ProcPath(point.File)
		}
		options, idmap := takeIDMapping(m.Options)
		var userns *os.File
		if idmap.set() {
			if userns, err = userNamespace(r, idmap); err != nil {
				return fmt.Errorf("mount %s on %s: %w", m.Source, shown, err)
			}
			defer userns.Close()
			if m.Type == "overlay" {
				// The layers are mapped; the overlay over them needs nothing more.
				var undo func()
				if options, undo, err = idmapLowerdirs(options, filepath.Join(filepath.Dir(rootfs), fmt.Sprintf(".idmapped-layers-%d", i)), userns); err != nil {
					return fmt.Errorf("mount %s on %s: %w", m.Source, shown, err)
				}
				defer undo()
			}
		}
		dir := ""
		if m.Type == "overlay" {
			options, dir = compactLowerdirs(options)
		}
		options, loop := takeWord(options, "loop")
		direct := false
		if loop {
			options, direct = takeWord(options, "direct-io")
		}
		options, propagation := takePropagation(options)
		flags, data := parseOptions(options)
		source := m.Source
		if loop && flags&unix.MS_BIND == 0 {
			// A filesystem image (containerd's blockfile snapshotter): mounted
			// from a loop device, which detaches itself once unmounted.
			dev, err := loopdev.Attach(m.Source, loopdev.Options{ReadOnly: flags&unix.MS_RDONLY != 0, DirectIO: direct})
			if err != nil {
				return fmt.Errorf("mount %s (%s) on %s: %w", m.Source, m.Type, shown, err)
			}
			defer dev.Close() // after the mount: it is then the device's only user
			source = dev.Name()
		}
		// A read-only bind takes two calls: the kernel ignores MS_RDONLY on
		// the first MS_BIND and only honours it on a remount.
		first := flags
		if flags&unix.MS_BIND != 0 {
			first &^= unix.MS_RDONLY
		}
		if err := mountFrom(dir, source, target, m.Type, first, data); err != nil {
			return fmt.Errorf("mount %s (%s) on %s: %w", m.Source, m.Type, shown, err)
		}
		mounted++
		remountRO := flags&unix.MS_BIND != 0 && flags&unix.MS_RDONLY != 0
		mapOnTop := userns != nil && m.Type != "overlay"
		if m.Target != "" && (remountRO || mapOnTop || propagation != 0) {
			// The descriptor names the directory under the new mount; what
			// follows acts on the mount.
			over, err := mountedOn(point)
			if err != nil {
				return fmt.Errorf("mount %s on %s: %w", m.Source, shown, err)
			}
			defer over.Close()
			target = inroot.ProcPath(over)
		}
		if propagation != 0 {
			// A call of its own: the kernel takes a propagation change alone.
			if err := unix.Mount("", target, "", propagation, ""); err != nil {
				return fmt.Errorf("mount %s on %s: propagation: %w", m.Source, shown, err)
			}
		}
		if remountRO {
			if err := unix.Mount("", target, "", flags|unix.MS_REMOUNT, ""); err != nil {
				return fmt.Errorf("remount %s read-only: %w", shown, err)
			}
		}
		if mapOnTop {
			// Anything else is mapped where it is mounted, on top of it.
			if err := idmapMount(target, target, userns, 0); err != nil {
				return fmt.Errorf("%s: %w", shown, err)
			}
			mounted++
		}
	}
	return nil
}

// mountedOn opens the root of the mount just made on point's directory: what
// its name leads to now, if that is on another mount than the directory
// under it. The caller closes the file.
func mountedOn(point *inroot.Dir) (*os.File, error) {
	f, err := point.Reopen()
	if err != nil {
		return nil, err
	}
	under, errUnder := inroot.MountID(point.File)
	over, errOver := inroot.MountID(f)
	switch {
	case errUnder != nil || errOver != nil:
		f.Close()
		return nil, errors.Join(errUnder, errOver)
	case under == over:
		f.Close()
		return nil, fmt.Errorf("the mount point no longer leads to the mount")
	}
	return f, nil
}

// maxMountData is what the kernel takes of a mount's option data: one page,
// with its terminating NUL.
const maxMountData = 4096 - 1

// compactLowerdirs makes an overlay's lowerdirs relative to their common
// parent when the options would not fit in one page otherwise, and returns
// that parent to mount from (empty: the options as they were). An image of
// some fifty layers under containerd's snapshot directory names more than a
// page of lowerdirs; containerd's own mount code does the same.
func compactLowerdirs(options []string) ([]string, string) {
	if _, data := parseOptions(options); len(data) <= maxMountData {
		return options, ""
	}
	at, dirs := lowerdirs(options)
	parent := commonParent(dirs)
	if at < 0 || parent == "" {
		return options, ""
	}
	return withLowerdirs(options, at, dirs, parent, ""), parent + "/"
}

// lowerdirs finds an overlay's lowerdir option: its index in options (-1:
// none) and the directories it lists.
func lowerdirs(options []string) (at int, dirs []string) {
	at = -1
	for i, o := range options {
		if strings.HasPrefix(o, "lowerdir=") {
			at = i
		}
	}
	if at < 0 {
		return -1, nil
	}
	return at, strings.Split(strings.TrimPrefix(options[at], "lowerdir="), ":")
}

// commonParent is the deepest directory that holds every one of dirs below
// it; "" when only / does.
func commonParent(dirs []string) string {
	if len(dirs) == 0 {
		return ""
	}
	parent := filepath.Dir(dirs[0])
	for _, d := range dirs {
		for !strings.HasPrefix(d, parent+"/") {
			if parent = filepath.Dir(parent); parent == "/" {
				return ""
			}
		}
	}
	if parent == "/" {
		return ""
	}
	return parent
}

// withLowerdirs is options with the lowerdir option at at rewritten: each of
// dirs with the prefix parent replaced by base (base "" makes them relative to
// parent).
func withLowerdirs(options []string, at int, dirs []string, parent, base string) []string {
	moved := make([]string, len(dirs))
	for i, d := range dirs {
		rel := strings.TrimPrefix(d, parent+"/")
		if base != "" {
			rel = base + "/" + rel
		}
		moved[i] = rel
	}
	out := append([]string(nil), options...)
	out[at] = "lowerdir=" + strings.Join(moved, ":")
	return out
}

// mountFrom mounts with dir as the working directory when dir is set, for
// relative option paths.
func mountFrom(dir, source, target, fstype string, flags uintptr, data string) error {
	if dir == "" {
		return unix.Mount(source, target, fstype, flags, data)
	}
	enter := func() error {
		if err := unix.Chdir(dir); err != nil {
			return fmt.Errorf("chdir to the layers' parent %s: %w", dir, err)
		}
		return nil
	}
	return inWorkingDir(enter, func() error { return unix.Mount(source, target, fstype, flags, data) })
}

// inWorkingDir runs fn with the working directory enter moves to. The
// working directory belongs to the process, so fn runs on a thread given a
// filesystem context of its own (CLONE_FS).
//
// The thread then goes back to the working directory it had and is handed
// back to the scheduler. It must not be ended instead (a goroutine exiting
// locked ends its thread): the runtime's commands start with a parent-death
// signal, which the kernel ties to the thread that forked them, so ending a
// thread that once started a command still running would SIGKILL that
// command. The thread's own filesystem context holds the same working
// directory, root and umask as the process's after the chdir back, and the
// shim changes none of them anywhere else. Only when going back fails does
// the thread stay locked and end with its goroutine.
func inWorkingDir(enter, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		home, err := unix.Open(".", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("open the working directory: %w", err)
			return
		}
		defer unix.Close(home)
		if err := unix.Unshare(unix.CLONE_FS); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("a working directory of its own: %w", err)
			return
		}
		if err = enter(); err == nil {
			err = fn()
		}
		if unix.Fchdir(home) == nil {
			runtime.UnlockOSThread()
		}
		errc <- err
	}()
	return <-errc
}
