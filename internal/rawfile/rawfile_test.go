package rawfile

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
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
