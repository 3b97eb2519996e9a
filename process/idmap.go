package process

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"

	"github.com/example/containerd-shim-example-v2/holder"
	"github.com/example/containerd-shim-example-v2/reaper"
)

// ID-mapped rootfs mounts. containerd 2.x gives a pod that has a user
// namespace of its own (Kubernetes hostUsers: false) rootfs mounts with
// uidmap= and gidmap= options ("container:host:size[,...]"), as its own mount
// code understands them: the layers are seen through an ID-mapped mount, so
// that what the image owns as 0 is owned by the pod's range on the host. The
// kernel takes a mapping as a user namespace: a holder (the pod holder's
// program, see package holder) is started in a new one with those mappings,
// its /proc/<pid>/ns/user opened and the holder stopped; the open file keeps
// the namespace for as long as the mounts are being made.

// idMapping is a mount's uidmap= and gidmap= options.
type idMapping struct{ uid, gid string }

// set reports whether the mount is to be ID-mapped: both maps are needed, as
// for containerd.
func (m idMapping) set() bool { return m.uid != "" && m.gid != "" }

// takeIDMapping removes uidmap= and gidmap= from options (they are not the
// filesystem's) and returns them.
func takeIDMapping(options []string) ([]string, idMapping) {
	var m idMapping
	out := make([]string, 0, len(options))
	for _, o := range options {
		switch {
		case strings.HasPrefix(o, "uidmap="):
			m.uid = strings.TrimPrefix(o, "uidmap=")
		case strings.HasPrefix(o, "gidmap="):
			m.gid = strings.TrimPrefix(o, "gidmap=")
		default:
			out = append(out, o)
		}
	}
	return out, m
}

// parseIDMappings reads "container:host:size[,container:host:size...]".
func parseIDMappings(s string) ([]syscall.SysProcIDMap, error) {
	var out []syscall.SysProcIDMap
	for _, r := range strings.Split(s, ",") {
		f := strings.Split(r, ":")
		if len(f) != 3 {
			return nil, fmt.Errorf("ID mapping %q: want container:host:size: %w", r, errdefs.ErrInvalidArgument)
		}
		var n [3]int
		for i, v := range f {
			x, err := strconv.ParseUint(v, 10, 32)
			if err != nil {
				return nil, fmt.Errorf("ID mapping %q: %w", r, errdefs.ErrInvalidArgument)
			}
			n[i] = int(x)
		}
		if n[2] == 0 {
			return nil, fmt.Errorf("ID mapping %q: empty range: %w", r, errdefs.ErrInvalidArgument)
		}
		out = append(out, syscall.SysProcIDMap{ContainerID: n[0], HostID: n[1], Size: n[2]})
	}
	return out, nil
}

// userNamespace is a user namespace with m's mappings, as an open
// /proc/<pid>/ns/user.
func userNamespace(r *reaper.Reaper, m idMapping) (*os.File, error) {
	uids, err := parseIDMappings(m.uid)
	if err != nil {
		return nil, fmt.Errorf("uidmap: %w", err)
	}
	gids, err := parseIDMappings(m.gid)
	if err != nil {
		return nil, fmt.Errorf("gidmap: %w", err)
	}
	if r == nil {
		return nil, fmt.Errorf("an ID-mapped mount needs a user namespace, and nothing to reap its holder: %w", errdefs.ErrNotImplemented)
	}
	h, err := holder.Start(holder.Config{ID: "idmap", UIDMappings: uids, GIDMappings: gids, Reaper: r})
	if err != nil {
		return nil, fmt.Errorf("a user namespace for the ID mapping: %w", err)
	}
	defer func() {
		h.Stop()
		<-h.Exit()
	}()
	f, err := os.Open(fmt.Sprintf("/proc/%d/ns/user", h.Pid))
	if err != nil {
		return nil, fmt.Errorf("the ID mapping's user namespace: %w", err)
	}
	return f, nil
}

// idmapMount attaches an ID-mapped copy of the tree at source (with its
// submounts) at target, with attrs (MOUNT_ATTR_RDONLY, ...) set on it.
func idmapMount(source, target string, userns *os.File, attrs uint64) error {
	fd, err := unix.OpenTree(unix.AT_FDCWD, source, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC|unix.AT_RECURSIVE)
	if err != nil {
		return fmt.Errorf("ID-mapped mount of %s: open_tree: %w", source, err)
	}
	defer unix.Close(fd)
	attr := unix.MountAttr{Attr_set: unix.MOUNT_ATTR_IDMAP | attrs, Userns_fd: uint64(userns.Fd()), Propagation: unix.MS_PRIVATE}
	if err := unix.MountSetattr(fd, "", unix.AT_EMPTY_PATH|unix.AT_RECURSIVE, &attr); err != nil {
		return fmt.Errorf("ID-mapped mount of %s: mount_setattr: %w", source, err)
	}
	if err := unix.MoveMount(fd, "", unix.AT_FDCWD, target, unix.MOVE_MOUNT_F_EMPTY_PATH|unix.MOVE_MOUNT_T_SYMLINKS); err != nil {
		return fmt.Errorf("ID-mapped mount of %s on %s: move_mount: %w", source, target, err)
	}
	return nil
}

// idmapLowerdirs maps an overlay's layers: their common parent is mounted
// ID-mapped and read-only at dir (made here), and the lowerdirs are rewritten
// to go through it, one mount for every layer, as containerd 2.x's own mount
// code does. The parent is mapped with every mount below it, and the kernel
// refuses the whole tree (EINVAL) when one of them cannot be ID-mapped:
// another image's lazily pulled layer (a FUSE mount of the stargz
// snapshotter) beside this overlay's, say, where containerd fails. Then, or
// with no common parent below /, each layer is mapped on its own
// (idmapEachLowerdir). undo unmounts and removes what was made; the overlay,
// once mounted, keeps its layers without it.
func idmapLowerdirs(options []string, dir string, userns *os.File) (_ []string, undo func(), _ error) {
	at, dirs := lowerdirs(options)
	if at < 0 {
		return nil, nil, fmt.Errorf("an ID-mapped overlay without lowerdir: %w", errdefs.ErrInvalidArgument)
	}
	if err := os.Mkdir(dir, 0o700); err != nil {
		return nil, nil, fmt.Errorf("ID-mapped layers' mount point: %w", err)
	}
	if parent := commonParent(dirs); parent != "" {
		err := idmapMount(parent, dir, userns, unix.MOUNT_ATTR_RDONLY)
		if err == nil {
			return withLowerdirs(options, at, dirs, parent, dir), func() {
				_ = unix.Unmount(dir, unix.MNT_DETACH)
				_ = os.Remove(dir)
			}, nil
		}
		if !errors.Is(err, unix.EINVAL) {
			_ = os.Remove(dir)
			return nil, nil, err
		}
	}
	return idmapEachLowerdir(options, at, dirs, dir, userns)
}

// idmapEachLowerdir maps each of an overlay's layers on its own, at dir/<n>
// (dir made by the caller), and rewrites the lowerdir option to go through
// them. On failure it undoes what it made, dir included.
func idmapEachLowerdir(options []string, at int, dirs []string, dir string, userns *os.File) (_ []string, undo func(), retErr error) {
	var made []string
	undo = func() {
		for _, m := range made {
			_ = unix.Unmount(m, unix.MNT_DETACH)
			_ = os.Remove(m)
		}
		_ = os.Remove(dir)
	}
	defer func() {
		if retErr != nil {
			undo()
		}
	}()
	mapped := make([]string, len(dirs))
	for i, d := range dirs {
		point := filepath.Join(dir, strconv.Itoa(i))
		if err := os.Mkdir(point, 0o700); err != nil {
			return nil, nil, fmt.Errorf("ID-mapped layer's mount point: %w", err)
		}
		if err := idmapMount(d, point, userns, unix.MOUNT_ATTR_RDONLY); err != nil {
			_ = os.Remove(point)
			return nil, nil, err
		}
		made = append(made, point)
		mapped[i] = point
	}
	out := slices.Clone(options)
	out[at] = "lowerdir=" + strings.Join(mapped, ":")
	return out, undo, nil
}
