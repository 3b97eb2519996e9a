package io

import (
	"net"
	"testing"
	"time"
)

// A runtime that connects to the console socket and sends nothing (hung,
// or not a runtime at all) fails the receive in bounded time, instead of
// holding Create or Exec for good.
func TestConsoleSocketReceiveIsBounded(t *testing.T) {
	defer func(d time.Duration) { consoleReceiveTimeout = d }(consoleReceiveTimeout)
	consoleReceiveTimeout = 200 * time.Millisecond
	s, err := NewConsoleSocket(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	conn, err := net.Dial("unix", s.Path())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	done := make(chan error, 1)
	go func() {
		f, err := s.ReceiveMaster()
		if f != nil {
			f.Close()
		}
		done <- err
	}()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("a master received from a connection that sent nothing")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("ReceiveMaster still waits on a connection that sends nothing")
	}
}
