// Package ttrpcserver is where containerd's requests enter the shim: a ttrpc
// server for unary calls, which is all the task, sandbox, introspection and
// upgrade services use.
//
// It speaks the same wire protocol as github.com/containerd/ttrpc's server
// (whose message types, method tables and handshakers it reuses) but costs
// less per connection. containerd opens one connection per task even when
// the tasks share a pod's shim, so this cost is paid per container: ttrpc's
// server keeps two goroutines and a 4 KiB buffered reader and writer for
// every connection for as long as it is open. Here an idle connection has
// no goroutine at all: its socket waits in an epoll set of the server's own
// (watcher), and a goroutine reads only while it has input. A request's
// body is read into a buffer of its exact size, and a response is written
// with one write(2) from a buffer of its exact size. Each request is handled
// in its own goroutine, as ttrpc does, so that a long call (Wait) never holds
// up the others on the same connection. The price of the watcher is two
// system calls per burst of requests (reading the set, re-arming the socket)
// for one saved (the read that found the socket empty).
//
// Streaming calls are not served: no shim service has one, and a stream
// request is answered Unimplemented like an unknown method.
package ttrpcserver
