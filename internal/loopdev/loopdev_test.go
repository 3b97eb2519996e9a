package loopdev

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

func needLoop(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("loop devices need root")
	}
	if _, err := os.Stat(controlPath); err != nil {
		t.Skipf("no loop devices: %v", err)
	}
}

// backingOf reads which file the kernel has attached to the device.
func backingOf(dev string) string {
	b, _ := os.ReadFile("/sys/block/" + filepath.Base(dev) + "/loop/backing_file")
	return strings.TrimSpace(string(b))
}

// Attaches racing for the same free device each end up on a device of
// their own (the losers are told EBUSY and ask again), and each device
// detaches itself once its file is closed.
func TestConcurrentAttachesGetDevicesOfTheirOwn(t *testing.T) {
	needLoop(t)
	dir := t.TempDir()
	const n = 6
	devs := make([]*os.File, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		img := filepath.Join(dir, fmt.Sprintf("img-%d", i))
		if err := os.WriteFile(img, make([]byte, 1<<20), 0o600); err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			devs[i], errs[i] = Attach(img, Options{ReadOnly: i%2 == 0})
		}()
	}
	wg.Wait()
	seen := map[string]bool{}
	for i, dev := range devs {
		if errs[i] != nil {
			t.Errorf("attach %d: %v", i, errs[i])
			continue
		}
		defer dev.Close()
		img := filepath.Join(dir, fmt.Sprintf("img-%d", i))
		if got := backingOf(dev.Name()); got != img {
			t.Errorf("%s is backed by %q, want %s", dev.Name(), got, img)
		}
		ro, _ := os.ReadFile("/sys/block/" + filepath.Base(dev.Name()) + "/ro")
		if want := map[bool]string{true: "1", false: "0"}[i%2 == 0]; strings.TrimSpace(string(ro)) != want {
			t.Errorf("%s read-only %q, want %s", dev.Name(), ro, want)
		}
		if seen[dev.Name()] {
			t.Errorf("%s handed out twice", dev.Name())
		}
		seen[dev.Name()] = true
	}
	for i, dev := range devs {
		if dev == nil {
			continue
		}
		name := dev.Name()
		dev.Close()
		deadline := time.Now().Add(5 * time.Second)
		for backingOf(name) == filepath.Join(dir, fmt.Sprintf("img-%d", i)) {
			if time.Now().After(deadline) {
				t.Fatalf("%s still attached after its last close", name)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}

// A file that is not there is an error naming it, and takes no device.
func TestAttachMissingFile(t *testing.T) {
	needLoop(t)
	missing := filepath.Join(t.TempDir(), "missing.img")
	dev, err := Attach(missing, Options{})
	if err == nil {
		dev.Close()
		t.Fatal("a missing file attached")
	}
	if !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), missing) {
		t.Errorf("error %v: want not-exist, naming the file", err)
	}
}

// DirectIO is asked of the kernel: on a filesystem that does direct I/O
// the device bypasses the page cache; on one that may not (tmpfs before
// Linux 6.6) the file is attached all the same.
func TestAttachDirectIO(t *testing.T) {
	needLoop(t)
	dirs := map[string]string{"disk": t.TempDir()}
	shm := filepath.Join("/dev/shm", "loopdev-test-"+strconv.Itoa(os.Getpid()))
	if err := os.Mkdir(shm, 0o700); err == nil {
		defer os.RemoveAll(shm)
		dirs["tmpfs"] = shm
	}
	for name, dir := range dirs {
		img := filepath.Join(dir, "img")
		if err := os.WriteFile(img, make([]byte, 1<<20), 0o600); err != nil {
			t.Fatal(err)
		}
		dev, err := Attach(img, Options{DirectIO: true})
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		dio, _ := os.ReadFile("/sys/block/" + filepath.Base(dev.Name()) + "/loop/dio")
		dev.Close()
		if name == "disk" && strings.TrimSpace(string(dio)) != "1" {
			t.Errorf("%s: direct I/O %q, want 1", name, dio)
		}
		t.Logf("%s: direct I/O %s", name, strings.TrimSpace(string(dio)))
	}
}
