package holder

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"
)

// ipcSysctls are the kernel.* sysctls that belong to an IPC namespace.
var ipcSysctls = map[string]bool{
	"kernel.msgmax": true, "kernel.msgmnb": true, "kernel.msgmni": true,
	"kernel.sem": true, "kernel.shmall": true, "kernel.shmmax": true,
	"kernel.shmmni": true, "kernel.shm_rmid_forced": true,
	"kernel.msg_next_id": true, "kernel.sem_next_id": true, "kernel.shm_next_id": true,
}

// utsSysctls belong to a UTS namespace. kernel.hostname does too, but a pod's
// hostname is its config's (CheckSysctl refuses the sysctl).
var utsSysctls = map[string]bool{"kernel.domainname": true}

// CheckSysctl reports whether a pod may set sysctl name: only sysctls of a
// namespace the pod has of its own (network, IPC, UTS) are allowed, since the
// holder writes them from inside those namespaces; anything else would change
// the node. A name may come in either of sysctl.d(5)'s forms, as runc takes
// it ("net.ipv4.conf.eth0/100.forwarding", "net/ipv4/conf/eth0.100/forwarding").
// The error is InvalidArgument.
func CheckSysctl(name string, netns, ipc, uts bool) error {
	for _, part := range strings.Split(sysctlRel(name), "/") {
		if part == "" || part == "." || part == ".." {
			return fmt.Errorf("sysctl %q: not a sysctl name: %w", name, errdefs.ErrInvalidArgument)
		}
	}
	key := dottedSysctl(name)
	var own bool
	var which string
	switch {
	case key == "kernel.hostname":
		// It would override the hostname the pod's config gives, which is
		// also the one in the pod's hostname file; runc refuses it for the
		// pause container as conflicting with the spec's hostname.
		return fmt.Errorf("sysctl %q conflicts with the pod's hostname (set the hostname instead): %w", name, errdefs.ErrInvalidArgument)
	case strings.HasPrefix(key, "net."):
		own, which = netns, "network"
	case ipcSysctls[key] || strings.HasPrefix(key, "fs.mqueue."):
		own, which = ipc, "IPC"
	case utsSysctls[key]:
		own, which = uts, "UTS"
	default:
		return fmt.Errorf("sysctl %q is not namespaced: a pod cannot set it: %w", name, errdefs.ErrInvalidArgument)
	}
	if !own {
		return fmt.Errorf("sysctl %q needs a %s namespace of the pod's own (the pod uses the node's): %w",
			name, which, errdefs.ErrInvalidArgument)
	}
	return nil
}

// SysctlKey is a sysctl's name in its dotted form, whichever of sysctl.d(5)'s
// two forms it came in: the key by which two names are the same sysctl.
func SysctlKey(name string) string { return dottedSysctl(name) }

// dottedSysctl is a sysctl name in its dotted form: one whose first
// separator is a slash has its slashes and dots swapped (sysctl.d(5)).
func dottedSysctl(name string) string {
	if i := strings.IndexAny(name, "./"); i >= 0 && name[i] == '/' {
		return swapSysctlSeparators(name)
	}
	return name
}

// sysctlRel is a sysctl's path under /proc/sys: its dotted form with dots and
// slashes swapped (a slash in the dotted form is a dot in a name).
func sysctlRel(name string) string {
	return swapSysctlSeparators(dottedSysctl(name))
}

func swapSysctlSeparators(s string) string {
	return strings.Map(func(r rune) rune {
		switch r {
		case '.':
			return '/'
		case '/':
			return '.'
		}
		return r
	}, s)
}

// SysctlPath is the /proc/sys file of a sysctl, in either name form (one
// CheckSysctl accepted is in the pod's namespaces when written from them).
func SysctlPath(name string) string {
	return "/proc/sys/" + sysctlRel(name)
}

// writeSysctl sets one sysctl through /proc/sys. A sysctl this kernel
// does not have, or a value it refuses, is the request's mistake
// (InvalidArgument), as a name CheckSysctl refuses is.
func writeSysctl(name, value string) error {
	err := os.WriteFile(SysctlPath(name), []byte(value), 0)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, fs.ErrNotExist), errors.Is(err, unix.EINVAL), errors.Is(err, unix.ERANGE):
		return fmt.Errorf("sysctl %s=%s: %w: %w", name, value, err, errdefs.ErrInvalidArgument)
	}
	return fmt.Errorf("sysctl %s=%s: %w", name, value, err)
}
