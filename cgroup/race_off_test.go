//go:build !race

package cgroup

// raceDetector: see race_on_test.go.
const raceDetector = false
