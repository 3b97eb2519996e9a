package io

import (
	"os"
	"testing"
	"time"
)

// TestMain shortens the grace a process gets after reading a terminal's
// end-of-file character (ptyend.go) for every test, once, before any test
// starts a watch: a test that set it and restored it afterwards raced with
// the watches earlier tests had left running.
func TestMain(m *testing.M) {
	rawEndOfInputGrace = 100 * time.Millisecond
	os.Exit(m.Run())
}
