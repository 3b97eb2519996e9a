#!/usr/bin/env bash
# The shim built with Go's race detector, run by the containerd-free harness (integration/direct)
# and by a set of integration tests that drive it from many sides at once (concurrent execs,
# stdin and output relays, terminals, an upgrade in place, a containerd restart, grouped tasks,
# CRI and sandbox pods) under the newest containerd 2.x. A race report from any shim process, the
# daemons that outlive their tests included, fails the run.
#
# Not the memory tests (TestIdleShimMemoryBudget, TestChurn): the race runtime's own memory is far
# above their bounds. RACE_RUN overrides the integration selection (a go test -run regex).
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${BIN_DIR:-$PWD/bin}/race
reports=$dir/reports
rm -rf "$dir"
mkdir -p "$reports"
CGO_ENABLED=1 go build -race -o "$dir/containerd-shim-example-v2" ./cmd/shim

run=${RACE_RUN:-'^(TestExecConcurrent|TestWaitExitStatusAndEvents|TestStdinLargeRoundTrip|TestTerminalCtrExec|TestLargeOutputThenImmediateDelete|TestGroupingSharesOneShim|TestContainerdRestart|TestUpgradeInPlace|TestOOMKill|TestCRIPodLifecycle|TestSandboxPod)$'}
# Shims inherit containerd's environment, and the tests start containerd with theirs.
export GORACE="log_path=$reports/race" SHIM_BINARY="$dir/containerd-shim-example-v2"
status=0
(cd integration && go test -count=1 -timeout 20m ./direct/) || status=$?
(cd integration && TEST_FLAVORS=2.4 go test -count=1 -timeout 20m -run "$run" .) || status=$?

shopt -s nullglob
found=("$reports"/race.*)
if ((${#found[@]} > 0)); then
	echo "race-shim: ${#found[@]} shim process(es) reported a data race:"
	for f in "${found[@]}"; do
		echo "== $f"
		cat "$f"
	done
	exit 1
fi
if ((status != 0)); then
	echo "race-shim: tests failed (status $status), no race reported"
	exit "$status"
fi
echo "race-shim: no data race reported"
