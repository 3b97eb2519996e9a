package process

import (
	"golang.org/x/sys/unix"
	"testing"

	"github.com/containerd/errdefs"
)

func TestTransitions(t *testing.T) {
	ok := map[Status][]Op{
		Created: {OpStart, OpDelete, OpExec, OpUpdate},
		Running: {OpPause, OpExec, OpUpdate, OpCheckpoint},
		Paused:  {OpResume, OpUpdate, OpCheckpoint},
		Stopped: {OpDelete},
	}
	all := []Op{OpStart, OpDelete, OpPause, OpResume, OpExec, OpUpdate, OpCheckpoint}
	for _, s := range []Status{Created, Running, Paused, Stopped, Deleted} {
		for _, op := range all {
			want := false
			for _, o := range ok[s] {
				want = want || o == op
			}
			err := check(s, op)
			switch {
			case want && err != nil:
				t.Errorf("%s in %s refused: %v", op, s, err)
			case !want && err == nil:
				t.Errorf("%s in %s allowed", op, s)
			case !want && s == Deleted && !errdefs.IsNotFound(err):
				t.Errorf("%s on deleted: %v, want NotFound", op, err)
			case !want && s != Deleted && !errdefs.IsFailedPrecondition(err):
				t.Errorf("%s in %s: %v, want FailedPrecondition", op, s, err)
			}
		}
	}
}

func TestParseOptions(t *testing.T) {
	flags, data := parseOptions([]string{"ro", "rbind", "nosuid", "lowerdir=/a:/b", "upperdir=/u", "rw"})
	if data != "lowerdir=/a:/b,upperdir=/u" {
		t.Fatalf("data %q", data)
	}
	const want = 0x1000 | 0x4000 | 0x2 // MS_BIND | MS_REC | MS_NOSUID, "rw" cleared MS_RDONLY
	if flags != want {
		t.Fatalf("flags %#x, want %#x", flags, want)
	}
	// The rest of the words containerd's own mount code takes as flags.
	flags, data = parseOptions([]string{"strictatime", "dirsync", "mand", "nomand", "nostrictatime"})
	if flags != unix.MS_DIRSYNC || data != "" {
		t.Fatalf("flags %#x data %q, want MS_DIRSYNC alone and no data", flags, data)
	}
}
