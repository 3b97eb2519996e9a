//go:build race

package cgroup

// raceDetector tells a test that counts allocations that the race detector
// is on: it allocates on its own account, and the count means nothing.
const raceDetector = true
