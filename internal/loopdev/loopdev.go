// Package loopdev attaches a file to a free loop device, so that a rootfs
// entry with the mount option "loop" (a filesystem image, as containerd's
// blockfile snapshotter hands out) can be mounted like a disk.
//
// The device is attached with autoclear: the kernel detaches it by itself
// once the last user lets go of it. The caller mounts the device and then
// closes the file Attach returned; from then on the mount is the only user,
// and unmounting it frees the device. Nothing has to remember which device
// a container got, across a shim's restart or an in-place upgrade either.
package loopdev

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// controlPath is the loop control device, which hands out free devices.
const controlPath = "/dev/loop-control"

// attempts bounds the retries when another process takes the free device
// between the question and the attach (losetup retries the same way).
const attempts = 100

// Options are how a file is attached.
type Options struct {
	// ReadOnly attaches it read-only (and opens the file so): a read-only
	// mount of a writable device could still be written by journal replay.
	ReadOnly bool
	// DirectIO has the device bypass the page cache for the file (the mount
	// option "direct-io"), so its blocks are not cached twice. A file whose
	// filesystem cannot do direct I/O is attached without it, as losetup does.
	DirectIO bool
}

// Attach attaches the file at backing to a free loop device and returns the
// device, open. Close the device once it is mounted, or to detach it unused.
func Attach(backing string, o Options) (*os.File, error) {
	readOnly := o.ReadOnly
	mode := os.O_RDWR
	if readOnly {
		mode = os.O_RDONLY
	}
	file, err := os.OpenFile(backing, mode|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("loop device backing file: %w", err)
	}
	defer file.Close() // the device holds its own reference once attached
	ctl, err := os.OpenFile(controlPath, os.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("loop devices: %w", err)
	}
	defer ctl.Close()
	for try := 1; ; try++ {
		n, err := unix.IoctlRetInt(int(ctl.Fd()), unix.LOOP_CTL_GET_FREE)
		if err != nil {
			return nil, fmt.Errorf("find a free loop device: %w", err)
		}
		dev, err := os.OpenFile(fmt.Sprintf("/dev/loop%d", n), mode|unix.O_CLOEXEC, 0)
		if err != nil {
			return nil, fmt.Errorf("open a free loop device: %w", err)
		}
		err = configure(dev, file, backing, o)
		if err != nil && o.DirectIO && errors.Is(err, unix.EINVAL) {
			err = configure(dev, file, backing, Options{ReadOnly: readOnly})
		}
		if err == nil {
			return dev, nil
		}
		dev.Close()
		if !errors.Is(err, unix.EBUSY) || try == attempts {
			return nil, fmt.Errorf("attach %s to %s: %w", backing, dev.Name(), err)
		}
		// Taken meanwhile: ask again, after a pause that keeps two shims
		// racing for devices from meeting again at once.
		time.Sleep(time.Duration(rand.IntN(try*10)+1) * time.Millisecond)
	}
}

// configure attaches file to dev in one step (LOOP_CONFIGURE, Linux 5.8),
// or in two on older kernels, undoing the first when the second fails.
func configure(dev, file *os.File, backing string, o Options) error {
	var info unix.LoopInfo64
	info.Flags = unix.LO_FLAGS_AUTOCLEAR
	if o.ReadOnly {
		info.Flags |= unix.LO_FLAGS_READ_ONLY
	}
	if o.DirectIO {
		info.Flags |= unix.LO_FLAGS_DIRECT_IO
	}
	copy(info.File_name[:len(info.File_name)-1], backing) // what losetup shows; cut short if long
	fd := int(dev.Fd())
	err := unix.IoctlLoopConfigure(fd, &unix.LoopConfig{Fd: uint32(file.Fd()), Info: info})
	if !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOTTY) {
		return err // done, or failed for a reason the older calls share
	}
	if err := unix.IoctlSetInt(fd, unix.LOOP_SET_FD, int(file.Fd())); err != nil {
		return err
	}
	if err := unix.IoctlLoopSetStatus64(fd, &info); err != nil {
		_ = unix.IoctlSetInt(fd, unix.LOOP_CLR_FD, 0)
		return err
	}
	return nil
}
