// Package direct drives the shim binary the way a manager (containerd) does,
// with no containerd running: it is the first, fast line of defence for the
// wire contract (PROTOCOL.md §1, §2.4, §3, §4, §5). It never imports the
// shim's own module; it runs the built binary ($SHIM_BINARY, else
// ../../bin/containerd-shim-example-v2) and speaks to it over ttrpc.
//
// The harness (non-test files, one concern each):
//
//	tools.go      the shim binary, the runc it must use ($TEST_RUNC becomes a
//	              `runc` symlink first on the shim's PATH), waiting for `make deps`
//	rootfs.go     one busybox root filesystem per test binary run
//	bundle.go     a bundle in t.TempDir(): config.json (OCI spec), the `log` FIFO
//	              (read like containerd does, shown when a test fails)
//	bootstrap.go  containerd 2.3's BootstrapParams/BootstrapResult, written and
//	              read from the field numbers (the integration module's API
//	              version predates them), so the shim's decoder meets an
//	              independent encoder
//	launch.go     the `start` invocation in each manager style and the check of
//	              its answer: 2.3 bootstrap (protobuf, task v3), 1.7-2.2 (JSON
//	              version 2, task v2), 2.x opt-in (JSON version 3), 1.6 (plain
//	              address, task v2)
//	shim.go       the running daemon: its PID (pidfd), socket, ttrpc client
//	taskapi.go    one Task API interface for both protocol versions (v2 goes
//	              through containerd's own v2 client)
//	events.go     a fake containerd events endpoint (Events.Forward on
//	              TTRPC_ADDRESS) recording envelopes in arrival order
//	stdio.go      stdin/stdout/stderr FIFOs (github.com/containerd/fifo), with
//	              detach/re-attach of the stdin writer and deferred reading
//	container.go  one task: unique namespace and id, its own cgroup under the
//	              test's parent, Create and the common calls
//	cleanup.go    what a test leaves is removed even on failure: the shim
//	              (killed by pidfd), `runc delete --force`, mounts under the
//	              bundle, the socket, runc state and cgroup directories
//	sweep.go      what a killed test binary (go test -timeout) could not
//	              remove is removed by the next run: scratch directories name
//	              their owning process, fake containerd directories their task
//	procs.go      command lines and start times from /proc
//	errors.go     the errdefs class of a ttrpc error, as containerd sees it
//
// The scenarios (*_test.go), each against real runc and real containers:
//
//   - launch: every start style answers as its manager expects (format,
//     version, socket name and mode, bundle `address`), the daemon serves both
//     task services, and a task runs to its exit code through it; runtime
//     options on stdin are honoured (runc root); the 2.3 socket_dir is used
//   - lifecycle (exit codes, fast exit, Delete, Shutdown under v3 and v2,
//     the rest v3): exit codes 0, 1, 2, 42, 127 (command not found),
//     255 through Wait, State, Delete and /tasks/exit; a fast-exiting init with
//     Wait issued before Start; an init killed before Start; a task deleted
//     without a Start (its Wait returns, no exit event); output then exit
//     with every byte delivered; Delete's status and the NotFound of a second
//     Delete; Shutdown with and without a task left (the daemon exits, its
//     socket goes, nothing is left behind)
//   - stdin: a round trip through cat ending with CloseIO; detach and
//     re-attach on the stdin FIFO without the process seeing end-of-file
//   - exec (v3 and v2): exit codes, command not found (127 from a shell, a
//     failed Start for a missing binary), stdout and stderr, an exited exec's
//     output drained in full when read only after its exit, Delete
//   - logger: a binary:// logger that exits while the container runs does
//     not kill it with SIGPIPE
//   - kill: SIGKILL gives 137, SIGTERM reaches a trapping shell, a signal to
//     an exited process is NotFound
//   - resources: Pids (init and exec, exec ids in ProcessDetails), Stats
//     (cgroup v1 or v2 metrics), OOM (/tasks/oom before /tasks/exit, 137)
//   - events (v3 and v2): the exact topic order create, start, exec-added, exec-started,
//     exit (exec), exit (init), delete, with payloads and envelope fields
//   - errors: unknown ids and exec ids are NotFound, duplicate ids
//     AlreadyExists, wrong states FailedPrecondition, bad ids and bundle
//     paths InvalidArgument (a missing bundle NotFound); Connect never fails
//   - upgrade (in place, to the same binary): Waits on execs and the init
//     across the switch answer exit codes, whenever the process exits; an
//     exec killed at its container's delete holds the upgrade until its exit
//
// Run it with `make test-direct` (or `go test ./direct/` from integration/)
// as root; the whole package takes seconds.
package direct
