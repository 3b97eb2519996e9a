package io

import (
	"bytes"
	"fmt"
	stdio "io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// stdout and stderr appended to one plain file (a stdio path naming a
// regular file, as a tool driving the shim directly may give) go on across a
// halt: handed over, every line written before, during and after it is in
// the file once, each stream's in order.
func TestPlainFileOutputHandedOver(t *testing.T) {
	for _, mode := range []string{"handover", "restart"} {
		t.Run(mode, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "out")
			if err := os.WriteFile(path, []byte("before\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			p, err := Open(Config{Stdout: path, Stderr: path}, Env{})
			if err != nil {
				t.Fatal(err)
			}
			procOut, procErr := launchedProcess(t, p)
			if err := p.Handable(); err != nil {
				t.Fatalf("a plain file's output: %v, want it handable", err)
			}
			const lines = 4000
			written := make(chan struct{})
			go func() {
				defer close(written)
				for i := 0; i < lines; i++ {
					fmt.Fprintf(procOut, "out-%d\n", i)
					if i%8 == 0 {
						fmt.Fprintf(procErr, "err-%d\n", i)
					}
					if i%100 == 0 {
						time.Sleep(time.Millisecond)
					}
				}
			}()
			time.Sleep(5 * time.Millisecond) // halt in the middle of the stream
			next, st := haltAndGoOnWithState(t, p, mode)
			if st != nil && (len(st.Outputs) != 2 || !st.Outputs[0].Plain || !st.Outputs[1].Plain) {
				t.Fatalf("outputs handed over: %+v, want two plain files", st.Outputs)
			}
			<-written
			procOut.Close()
			procErr.Close()
			if !next.Drain(5 * time.Second) {
				t.Fatal("the relays did not finish")
			}
			next.Close()
			got, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			all := strings.Split(strings.TrimSuffix(string(got), "\n"), "\n")
			if len(all) == 0 || all[0] != "before" {
				t.Fatalf("the file's first line is not the one it had: appended, not overwritten, is wanted")
			}
			due := map[string]int{"out": 0, "err": 0}
			for _, l := range all[1:] {
				var stream string
				var n int
				if _, err := fmt.Sscanf(strings.Replace(l, "-", " ", 1), "%s %d", &stream, &n); err != nil {
					t.Fatalf("line %q: mixed or cut", l)
				}
				if n != due[stream] {
					t.Fatalf("%s line %d where %d was due: lost, repeated or out of order", stream, n, due[stream])
				}
				due[stream] += map[string]int{"out": 1, "err": 8}[stream]
			}
			if due["out"] != lines || due["err"] != lines {
				t.Fatalf("the file ends before the last lines: next out %d, next err %d, want %d", due["out"], due["err"], lines)
			}
		})
	}
}

// stdin read from a plain file, with the process not reading: the relay
// waits to write into the full pipe when the halt comes. The chunk in its
// hand goes over as the carry; the process then reads the whole file, in
// order, and end of file. (Before, the halt's wake-up ended the copy with an
// error: the process's stdin was closed with most of the file unread.)
func TestStdinFromAPlainFileHandedOver(t *testing.T) {
	for _, mode := range []string{"handover", "restart"} {
		t.Run(mode, func(t *testing.T) {
			payload := make([]byte, 1<<20)
			for i := range payload {
				payload[i] = byte(i*13 + i/509)
			}
			path := filepath.Join(t.TempDir(), "in")
			if err := os.WriteFile(path, payload, 0o644); err != nil {
				t.Fatal(err)
			}
			p, err := Open(Config{Stdin: path}, Env{})
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close()
			procIn := processStdin(t, p)
			defer procIn.Close()
			if err := p.Handable(); err != nil {
				t.Fatalf("stdin from a plain file: %v, want it handable", err)
			}
			waitFIFOFull(t, procIn) // the process reads nothing: the relay waits to write
			next, st := haltAndGoOnWithState(t, p, mode)
			if st != nil {
				defer next.Close()
				if st.Stdin == nil || len(st.Stdin.Carry) == 0 {
					t.Fatal("the halted stdin relay handed over no chunk: the test did not halt it in a write")
				}
			}
			_ = procIn.SetReadDeadline(time.Now().Add(10 * time.Second))
			got, err := stdio.ReadAll(procIn)
			if err != nil {
				t.Fatalf("the process read %d of %d bytes, then: %v", len(got), len(payload), err)
			}
			if !bytes.Equal(got, payload) {
				t.Fatalf("the process read %d bytes, want the file's %d, in order", len(got), len(payload))
			}
		})
	}
}

// stdin from a regular file the shim may not write (immutable here; a
// read-only mount alike) is read all the same: the shim opens no writer of
// its own on a regular file, only on a FIFO, where it keeps end of file away
// until CloseIO. (The stock shim opens one either way, and refuses such a
// file.)
func TestStdinFromAFileTheShimMayNotWrite(t *testing.T) {
	path := filepath.Join(t.TempDir(), "in")
	if err := os.WriteFile(path, []byte("read only\n"), 0o444); err != nil {
		t.Fatal(err)
	}
	immutable := setImmutable(t, path)
	p, err := Open(Config{Stdin: path}, Env{})
	if err != nil {
		t.Fatalf("stdin from a file the shim may not write (immutable: %v): %v", immutable, err)
	}
	defer p.Close()
	if p.stdinWriter != nil {
		t.Fatal("the shim opened a writer of its own on a regular file")
	}
	procIn := processStdin(t, p)
	defer procIn.Close()
	_ = procIn.SetReadDeadline(time.Now().Add(5 * time.Second))
	got, err := stdio.ReadAll(procIn)
	if err != nil || string(got) != "read only\n" {
		t.Fatalf("the process read %q, %v; want the file, then end of file", got, err)
	}
	p.CloseStdin() // CloseIO: nothing to close, no harm
}

// fsImmutableFL is FS_IMMUTABLE_FL of linux/fs.h (x/sys names the ioctls,
// not the flags).
const fsImmutableFL = 0x10

// setImmutable marks path immutable (chattr +i: not even root may open it
// for writing) until the test ends, and reports whether the filesystem let
// it.
func setImmutable(t *testing.T, path string) bool {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	flags, err := unix.IoctlGetInt(int(f.Fd()), unix.FS_IOC_GETFLAGS)
	if err != nil {
		t.Logf("no file attributes here (%v): the file is only read-only by its mode", err)
		return false
	}
	if err := unix.IoctlSetPointerInt(int(f.Fd()), unix.FS_IOC_SETFLAGS, flags|fsImmutableFL); err != nil {
		t.Logf("cannot make the file immutable here (%v): it is only read-only by its mode", err)
		return false
	}
	t.Cleanup(func() {
		g, err := os.Open(path)
		if err != nil {
			return
		}
		defer g.Close()
		_ = unix.IoctlSetPointerInt(int(g.Fd()), unix.FS_IOC_SETFLAGS, flags)
	})
	if w, err := os.OpenFile(path, os.O_WRONLY, 0); err == nil {
		w.Close()
		t.Fatal("an immutable file opened for writing: the test cannot tell")
	}
	return true
}

// A file:// log the shim creates is mode 0640 (less the umask), as
// containerd's CRI makes container logs (output can hold secrets; the stock
// shim makes it 0644), in a new directory 0755; an existing file keeps its
// mode.
func TestLogFileModes(t *testing.T) {
	umask := os.FileMode(unix.Umask(0))
	unix.Umask(int(umask))
	path := filepath.Join(t.TempDir(), "new", "c.log")
	f, err := openLogFile(path)
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	if st, err := os.Stat(path); err != nil || st.Mode().Perm() != 0o640&^umask {
		t.Errorf("new log file: %v, mode %#o, want %#o", err, st.Mode().Perm(), 0o640&^umask)
	}
	if st, err := os.Stat(filepath.Dir(path)); err != nil || st.Mode().Perm() != 0o755&^umask {
		t.Errorf("new log directory: %v, mode %#o, want %#o", err, st.Mode().Perm(), 0o755&^umask)
	}
	if err := os.Chmod(path, 0o604); err != nil {
		t.Fatal(err)
	}
	if f, err = openLogFile(path); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if st, err := os.Stat(path); err != nil || st.Mode().Perm() != 0o604 {
		t.Errorf("existing log file: %v, mode %#o, want its own 0604", err, st.Mode().Perm())
	}
}
