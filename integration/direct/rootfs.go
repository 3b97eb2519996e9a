package direct

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// busyboxPath is Debian's static busybox (package busybox-static): static, so
// it runs in a root filesystem that holds nothing else.
const busyboxPath = "/bin/busybox"

// Files every container sees: root and nobody, so `id`, `ls -l` and shells
// behave as in a real image.
const (
	etcPasswd = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
	etcGroup  = "root:x:0:\nnogroup:x:65534:\n"
)

// buildRootfs makes the root filesystem every container of the run shares
// (read-only; each container gets its own tmpfs on /tmp): busybox, one
// symlink per applet, /etc/passwd and /etc/group, and the mount points the
// spec uses. It is built once per test binary run, in the run's scratch dir.
func buildRootfs(dir string) (string, error) {
	for _, d := range []string{"bin", "sbin", "usr/bin", "usr/sbin", "etc", "proc", "sys", "dev", "root"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return "", err
		}
	}
	if err := os.Mkdir(filepath.Join(dir, "tmp"), 0o755); err != nil {
		return "", err
	}
	if err := os.Chmod(filepath.Join(dir, "tmp"), 0o1777); err != nil { // Mkdir's mode is filtered by umask
		return "", err
	}
	if err := copyExecutable(busyboxPath, filepath.Join(dir, "bin", "busybox")); err != nil {
		return "", fmt.Errorf("copy busybox: %w", err)
	}
	list, err := exec.Command(busyboxPath, "--list-full").Output()
	if err != nil {
		return "", fmt.Errorf("busybox --list-full: %w", err)
	}
	for _, applet := range strings.Fields(string(list)) {
		if applet == "bin/busybox" || strings.Contains(applet, "..") {
			continue
		}
		link := filepath.Join(dir, applet)
		if err := os.MkdirAll(filepath.Dir(link), 0o755); err != nil {
			return "", err
		}
		if err := os.Symlink("/bin/busybox", link); err != nil && !os.IsExist(err) {
			return "", err
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "etc", "passwd"), []byte(etcPasswd), 0o644); err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(dir, "etc", "group"), []byte(etcGroup), 0o644); err != nil {
		return "", err
	}
	return dir, nil
}

func copyExecutable(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
