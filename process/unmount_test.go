package process

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// A rootfs entry with a Target is mounted below the rootfs, which the
// kernel then finds busy: the unmount takes the mounts below first, and
// does not sit out the busy retries (a second in all) to end in a lazy
// detach.
func TestUnmountAllTakesMountsBelowFirst(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounting needs root")
	}
	base := t.TempDir()
	rootfs := mkdir(t, filepath.Join(base, "rootfs"))
	err := mountRootfs(rootfs, []Mount{
		{Type: "tmpfs", Source: "tmpfs"},
		{Type: "tmpfs", Source: "tmpfs", Target: "/sub"},
		{Type: "tmpfs", Source: "tmpfs", Target: "/sub/deeper dir"},
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := mountsBelow(rootfs); len(got) != 2 || !strings.HasSuffix(got[0], "/sub/deeper dir") {
		t.Fatalf("mounts below the rootfs: %q, want the two targets, deepest first", got)
	}
	t0 := time.Now()
	if err := unmountAll(rootfs); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(t0); d >= unmountBusyRetries*unmountBusyDelay/2 {
		t.Errorf("unmounting took %v: it waited out the busy retries", d)
	}
	if got := mountsBelow(base); len(got) != 0 {
		t.Errorf("still mounted: %q", got)
	}
}

func TestUnescapeMountPath(t *testing.T) {
	for in, want := range map[string]string{
		`/a/plain`:          "/a/plain",
		`/with\040space`:    "/with space",
		`/tab\011and\134bs`: "/tab\tand\\bs",
		`/trailing\04`:      `/trailing\04`,
		`/not\999octal`:     `/not\999octal`,
	} {
		if got := unescapeMountPath(in); got != want {
			t.Errorf("unescapeMountPath(%q) = %q, want %q", in, got, want)
		}
	}
}
