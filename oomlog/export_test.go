package oomlog

// For the tests of package oomlog_test, which log through oomlogtest.

const (
	MaxVictims   = maxVictims
	SummaryReach = summaryReach
)

// Kept reports how many victims l keeps, and whether it keeps pid.
func (l *Log) Kept(pid int) (n int, kept bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	_, kept = l.victims[pid]
	return len(l.victims), kept
}
