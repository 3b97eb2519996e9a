#!/usr/bin/env bash
# The cgroup v2 lane (make test-cgroup2, docs/cgroup2.md): builds the integration tests into
# one test binary on the host (the guest's root is read-only and it has no Go build cache
# of its own), boots the cgroup v2 guest (run.sh) and runs the tests matching $CGROUP2_RUN
# there against bin/containerd-shim-example-v2 (make build), under containerd 1.6 and the
# newest 2.x. Exits with the tests' status; prints the per-test verdicts at the end.
#
# CGROUP2_TEST_FLAGS adds test flags (e.g. -test.skip=...); CGROUP2_RUNC runs the shims with
# that runc (TEST_RUNC, e.g. /opt/runc/v1.5.1/runc) instead of Debian's; see run.sh for the
# VM's knobs. TEST_RUNTIME passes on (TEST_RUNTIME=io.containerd.runc.v2: the stock shim).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
run=${CGROUP2_RUN:?set CGROUP2_RUN to the -test.run regex (the Makefile has the default)}
out=$repo/bin/cgroup2
log=${CGROUP2_LOG:-$out/console.log}
export CGROUP2_LOG=$log

[ -x "$repo/bin/containerd-shim-example-v2" ] || { echo "test.sh: no bin/containerd-shim-example-v2 (make build)" >&2; exit 2; }
mkdir -p "$out"
# A directory of this run's own: the guest reads the binary while it runs.
work=$(mktemp -d "$out/run.XXXXXX")
trap 'rm -rf "$work"' EXIT
start=$(date +%s)
echo "cgroup2: building the integration test binary"
(cd "$repo/integration" && go test -c -o "$work/integration.test" .)
# The upgrade tests' second build of the shim (integration/upgrade_test.go).
mkdir -p "$work/upgrade-b"
(cd "$repo" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X github.com/example/containerd-shim-example-v2/launch.Version=upgrade-b" \
	-o "$work/upgrade-b/containerd-shim-example-v2" ./cmd/shim)

set +e
# shellcheck disable=SC2086 # CGROUP2_TEST_FLAGS is a list of flags
bash "$here/run.sh" env ${CGROUP2_RUNC:+TEST_RUNC=$CGROUP2_RUNC} ${TEST_RUNTIME:+TEST_RUNTIME=$TEST_RUNTIME} UPGRADE_SHIM_B="$work/upgrade-b/containerd-shim-example-v2" \
	"$here/guest-test.sh" "$work/integration.test" "$run" ${CGROUP2_TEST_FLAGS:-}
code=$?
set -e

echo "cgroup2: results in the guest (top-level tests and flavors; $log):"
tr -d '\r' <"$log" | grep -E '^ {0,4}--- (PASS|FAIL|SKIP): ' | sed 's/^/  /' || echo "  (no test results: see the log)"
if [ "$code" != 0 ]; then
	# The failing tests' own messages (what t.Error/t.Fatal said, first lines only): CI shows
	# the end of this output, and the log's tail is mostly the daemon log a failed test dumps.
	echo "cgroup2: what the failing tests said:"
	tr -d '\r' <"$log" | awk '
		/^=== (RUN|CONT|PAUSE) / { cur = $3; next }
		/^ *--- FAIL: / { failed[$3] = 1; next }
		/^ +[A-Za-z0-9_]+_test\.go:[0-9]+: / { n[cur]++; if (n[cur] <= 12) said[cur] = said[cur] "    " substr($0, 1, 400) "\n" }
		END { for (t in failed) if (t in said) printf "  %s:\n%s", t, said[t] }'
fi
echo "cgroup2: exit $code, $(($(date +%s) - start))s in all (build, boot, tests)"
exit "$code"
