#!/usr/bin/env bash
# Where the lifecycle's time goes, phase by phase, for both shims: runs the
# benchmark's lifecycle rows under `perf record` (scheduler exec/exit/fork
# events and the entries of connect, accept4, mount and umount: cheap
# tracepoints, not a syscall trace) and prints the phase medians
# (scripts/lifecycle-phases.py). Root; `make deps` and `make build` first.
#   scripts/lifecycle-phases.sh [lane]          lane: 1.6 (default), 2.x, 1.6/crun
#   BASELINE_SHIM=<binary> scripts/...          column A is that build instead of the stock shim
set -euo pipefail
cd "$(dirname "$0")/.."
lane=${1:-1.6}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
(cd integration && go build -o "$out/bench" ./cmd/bench)
perf record -q -a -o "$out/perf.data" \
	-e sched:sched_process_exec,sched:sched_process_exit,sched:sched_process_fork \
	-e syscalls:sys_exit_accept4,syscalls:sys_enter_mount,syscalls:sys_enter_umount,syscalls:sys_enter_connect \
	-- env SHIM_BINARY="$PWD/bin/containerd-shim-example-v2" "$out/bench" -lanes "$lane" -only lifecycle >"$out/bench.log"
grep -E '^\| lifecycle' "$out/bench.log" | head -2
perf script -i "$out/perf.data" -F tid,time,event,trace 2>/dev/null >"$out/events.txt"
python3 scripts/lifecycle-phases.py "$out/events.txt"
