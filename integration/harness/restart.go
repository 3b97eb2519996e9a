package harness

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Restarting a daemon (restart tests): StopProcess ends the containerd process alone, by its
// PID, and leaves everything it started running: the shims are not in containerd's process
// group (they make sessions of their own), and nothing else is signalled. StartProcess then
// starts containerd again with the same config, root, state, sockets, PATH and log, as a
// real restart of a host's containerd would, and waits until it serves. The Daemon keeps
// working across the two (Client returns a new client; Stop tears down as usual).

// StopProcess stops the containerd process (SIGTERM, SIGKILL after DaemonStopTimeout) and
// waits for it to exit. Shims, containers and the daemon's directories are left alone.
func (d *Daemon) StopProcess() error {
	d.mu.Lock()
	client := d.client
	d.client = nil
	d.mu.Unlock()
	if client != nil {
		client.Close()
	}
	if d.cmd == nil || d.cmd.Process == nil || d.Exited() {
		return nil
	}
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.exited:
		return nil
	case <-time.After(DaemonStopTimeout):
	}
	_ = d.cmd.Process.Kill()
	<-d.exited
	return fmt.Errorf("containerd %s (pid %d) did not stop on SIGTERM within %v; killed", d.Flavor, d.Pid(), DaemonStopTimeout)
}

// StartProcess starts containerd again after StopProcess, with the same configuration, and
// waits until it answers (which, for both flavors, is after it has reloaded the tasks of
// the shims that survived).
func (d *Daemon) StartProcess() error {
	if !d.Exited() {
		return fmt.Errorf("containerd %s (pid %d) is still running", d.Flavor, d.Pid())
	}
	d.mu.Lock()
	stopped := d.stopped
	d.mu.Unlock()
	if stopped {
		return fmt.Errorf("containerd %s was torn down by Stop", d.Flavor)
	}
	cmd := d.daemonCommand()
	cmd.Dir = d.Base
	cmd.Stdout = d.logFile
	cmd.Stderr = d.logFile
	cmd.Env = append(filteredEnv("PATH", "CONTAINERD_ADDRESS", "CONTAINERD_NAMESPACE", "NOTIFY_SOCKET"), "PATH="+d.PATH)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	// The previous process's wait goroutine has closed d.exited already (checked above), so
	// both can be replaced before the new one starts.
	exited := make(chan struct{})
	d.exited = exited
	if err := cmd.Start(); err != nil {
		close(exited)
		return fmt.Errorf("restart %s: %w", d.Containerd, err)
	}
	d.cmd = cmd
	_ = os.WriteFile(filepath.Join(d.Base, pidFileName), []byte(strconv.Itoa(cmd.Process.Pid)), 0o600)
	go func() {
		d.waitErr = cmd.Wait()
		close(exited)
	}()
	return d.waitServing()
}

// SetLogLevel rewrites the log level in the daemon's config; it takes effect at the next
// StartProcess. (containerd 2.x logs forwarded shim events only at "trace", 1.6 at "debug".)
func (d *Daemon) SetLogLevel(level string) error {
	data, err := os.ReadFile(d.ConfigPath)
	if err != nil {
		return err
	}
	var out []string
	found := false
	for _, line := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), "level = ") {
			line = fmt.Sprintf("  level = %q", level)
			found = true
		}
		out = append(out, line)
	}
	if !found {
		return fmt.Errorf("%s: no log level line", d.ConfigPath)
	}
	return os.WriteFile(d.ConfigPath, []byte(strings.Join(out, "\n")), 0o600)
}

// SwitchFlavor makes the next StartProcess run another containerd release on the same
// root, state, sockets and shims, as an operator upgrading (or downgrading) a node's
// containerd package does: stop the old daemon (StopProcess), SwitchFlavor, StartProcess.
// Both releases must read the same config version (1.x: 2, 2.x: 3).
func (d *Daemon) SwitchFlavor(flavor string) error {
	if !d.Exited() {
		return fmt.Errorf("containerd %s (pid %d) is still running", d.Flavor, d.Pid())
	}
	if FlavorMajor(flavor) != FlavorMajor(d.Flavor) {
		return fmt.Errorf("containerd %s and %s read different config versions", d.Flavor, flavor)
	}
	binDir, err := flavorBinDir(flavor)
	if err != nil {
		return err
	}
	containerd, ctr := filepath.Join(binDir, "containerd"), filepath.Join(binDir, "ctr")
	for _, p := range []string{containerd, ctr} {
		if _, err := os.Stat(p); err != nil {
			return fmt.Errorf("containerd %s needs %s (run `make deps`): %w", flavor, p, err)
		}
	}
	oldDir := filepath.Dir(d.Containerd)
	d.PATH = strings.Replace(d.PATH, string(os.PathListSeparator)+oldDir+string(os.PathListSeparator),
		string(os.PathListSeparator)+binDir+string(os.PathListSeparator), 1)
	d.Flavor, d.Containerd, d.CtrPath = flavor, containerd, ctr
	return nil
}
