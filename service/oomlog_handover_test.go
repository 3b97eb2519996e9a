package service

import (
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

// dupFDs keeps duplicates, as handover.FDs does, and says which descriptors
// it was asked to keep.
type dupFDs struct{ asked *[]int }

func (dupFDs) KeepDup(*os.File) (int, error) { return -1, os.ErrInvalid }
func (d dupFDs) KeepRaw(fd int, _ string) (int, error) {
	*d.asked = append(*d.asked, fd)
	return unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
}

// The kernel's OOM log, once read, goes over with the tasks: the next
// binary reads on from the descriptor handed over (so a kill logged during
// the switch is read), not from one it opens anew at the log's end.
func TestOOMLogIsHandedOver(t *testing.T) {
	old := New(Config{})
	defer old.oomLog.Close()
	if _, err := old.oomLog.Mark(); err != nil {
		t.Skipf("the kernel's log cannot be read here: %v", err)
	}
	var asked []int
	st, err := old.Export(dupFDs{&asked})
	if err != nil {
		t.Fatal(err)
	}
	if st.OOMLog == nil {
		t.Fatal("the log read was not handed over")
	}
	handed := throughWire(t, st)
	next := New(Config{})
	defer next.oomLog.Close()
	if err := next.Import(handed, nil); err != nil {
		t.Fatal(err)
	}
	asked = nil
	again, err := next.Export(dupFDs{&asked})
	if err != nil {
		t.Fatal(err)
	}
	if again.OOMLog != nil {
		unix.Close(again.OOMLog.FD)
	}
	if len(asked) != 1 || asked[0] != handed.OOMLog.FD {
		t.Errorf("the next binary reads the log from descriptor(s) %v, want the one handed over, %d", asked, handed.OOMLog.FD)
	}
}
