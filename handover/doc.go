// Package handover is what an in-place upgrade of the shim daemon passes from
// the running binary to its successor, which the daemon executes in its own
// process (same PID: it stays the parent and subreaper of its containers):
//
//   - containerd's ttrpc connections, paused between two messages with no
//     request left unanswered (Conn, Conns), so that containerd never sees a
//     disconnect: what it sends meanwhile waits in the socket;
//   - the listening socket (Listener), paused the same way;
//   - open files, by descriptor number, kept open across execve (FDs);
//   - a versioned description of everything else (Envelope), which a binary
//     that cannot read its version refuses before the switch (Hello).
//
// It knows nothing of tasks or processes: the packages that own state
// describe it themselves, and the daemon puts those descriptions together.
package handover
