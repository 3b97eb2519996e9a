package rawfile

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestReadIntoGrowsAndKeepsTheBuffer(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f")
	want := bytes.Repeat([]byte("0123456789"), 100) // longer than the 64-byte start
	if err := os.WriteFile(path, want, 0o600); err != nil {
		t.Fatal(err)
	}
	data, grown, err := ReadInto(path, nil)
	if err != nil || !bytes.Equal(data, want) {
		t.Fatalf("read %d bytes, %v; want %d", len(data), err, len(want))
	}
	if len(grown) < len(want) {
		t.Fatalf("the grown buffer holds %d bytes, want at least %d", len(grown), len(want))
	}
	// A second read into the grown buffer needs no new one.
	data2, grown2, err := ReadInto(path, grown)
	if err != nil || !bytes.Equal(data2, want) || &grown2[0] != &grown[0] {
		t.Fatalf("second read: %d bytes, %v, buffer reused %v", len(data2), err, &grown2[0] == &grown[0])
	}
	if _, _, err := ReadInto(filepath.Join(t.TempDir(), "missing"), nil); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing file: %v, want ErrNotExist", err)
	}
}

func TestWriteCreatesTruncatesAndKeepsMode(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f")
	if err := Write(path, []byte("a much longer first content"), unix.O_CREAT|unix.O_TRUNC, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := Write(path, []byte("short"), unix.O_CREAT|unix.O_TRUNC, 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(path)
	if err != nil || string(got) != "short" {
		t.Fatalf("file holds %q, %v", got, err)
	}
	if st, _ := os.Stat(path); st.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v, want 0600", st.Mode().Perm())
	}
	// Without O_CREAT a missing file is an error, as for a cgroup's tasks file.
	if err := Write(filepath.Join(t.TempDir(), "missing"), []byte("1"), 0, 0); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing file: %v, want ErrNotExist", err)
	}
}

// ReadIn reads dir/parts... with the path built on the stack: the same
// content as ReadInto, nothing allocated for a file that fits the buffer, a
// path too long for the stack still read, and a missing file's bare errno.
func TestReadInJoinsWithoutAllocating(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "memory.kmem.usage_in_bytes"), []byte("4096\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 128)
	data, _, err := ReadIn(buf, dir, "memory.kmem", ".usage_in_bytes")
	if err != nil || string(data) != "4096\n" {
		t.Fatalf("ReadIn: %q, %v", data, err)
	}
	if n := testing.AllocsPerRun(100, func() { _, _, _ = ReadIn(buf, dir, "memory.kmem", ".usage_in_bytes") }); n != 0 {
		t.Errorf("ReadIn allocates %v times per read, want 0", n)
	}
	if _, _, err := ReadIn(buf, dir, "memory.memsw", ".usage_in_bytes"); err != unix.ENOENT {
		t.Errorf("missing file: %v, want the bare ENOENT", err)
	}
	if n := testing.AllocsPerRun(100, func() { _, _, _ = ReadIn(buf, dir, "missing") }); n != 0 {
		t.Errorf("ReadIn of a missing file allocates %v times, want 0", n)
	}
	// A directory path longer than the stack buffer: joined on the heap, same content.
	deep := dir
	for len(deep) <= maxStackPath {
		deep = filepath.Join(deep, "a-fairly-long-directory-name")
	}
	if err := os.MkdirAll(deep, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(deep, "f"), []byte("deep"), 0o600); err != nil {
		t.Fatal(err)
	}
	if data, _, err := ReadIn(buf, deep, "f"); err != nil || string(data) != "deep" {
		t.Fatalf("ReadIn of a %d-byte path: %q, %v", len(deep)+2, data, err)
	}
	// A name that makes an otherwise short path too long.
	if _, _, err := ReadIn(buf, dir, strings.Repeat("n", maxStackPath)); err != unix.ENAMETOOLONG && err != unix.ENOENT {
		t.Fatalf("an over-long name: %v, want ENOENT or ENAMETOOLONG from the kernel", err)
	}
}
