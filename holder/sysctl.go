package holder

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/containerd/errdefs"
)

// ipcSysctls are the kernel.* sysctls that belong to an IPC namespace.
var ipcSysctls = map[string]bool{
	"kernel.msgmax": true, "kernel.msgmnb": true, "kernel.msgmni": true,
	"kernel.sem": true, "kernel.shmall": true, "kernel.shmmax": true,
	"kernel.shmmni": true, "kernel.shm_rmid_forced": true,
	"kernel.msg_next_id": true, "kernel.sem_next_id": true, "kernel.shm_next_id": true,
}

// utsSysctls belong to a UTS namespace.
var utsSysctls = map[string]bool{"kernel.hostname": true, "kernel.domainname": true}

// CheckSysctl reports whether a pod may set sysctl name: only sysctls of a
// namespace the pod has of its own (network, IPC, UTS) are allowed, since the
// holder writes them from inside those namespaces; anything else would change
// the node. The error is InvalidArgument.
func CheckSysctl(name string, netns, ipc, uts bool) error {
	if name == "" || strings.Contains(name, "/") || strings.Contains(name, "..") ||
		strings.HasPrefix(name, ".") || strings.HasSuffix(name, ".") {
		return fmt.Errorf("sysctl %q: not a sysctl name: %w", name, errdefs.ErrInvalidArgument)
	}
	var own bool
	var which string
	switch {
	case strings.HasPrefix(name, "net."):
		own, which = netns, "network"
	case ipcSysctls[name] || strings.HasPrefix(name, "fs.mqueue."):
		own, which = ipc, "IPC"
	case utsSysctls[name]:
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

// writeSysctl sets one sysctl through /proc/sys (dots are path separators).
func writeSysctl(name, value string) error {
	p := filepath.Join("/proc/sys", strings.ReplaceAll(name, ".", "/"))
	if err := os.WriteFile(p, []byte(value), 0); err != nil {
		return fmt.Errorf("sysctl %s=%s: %w", name, value, err)
	}
	return nil
}
