#!/usr/bin/env bash
# Runs inside the cgroup v2 guest (test.sh hands it to run.sh): the precompiled integration
# test binary against the built shim, under containerd 1.6 and the newest 2.x.
#
#   guest-test.sh <integration.test> <-test.run regex> [more test flags...]
set -u
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
bin=${1:?usage: guest-test.sh <integration.test> <regex> [flags...]}
run=${2:?usage: guest-test.sh <integration.test> <regex> [flags...]}
shift 2

# The environment the suite sees, for the log.
echo "guest: $(uname -r); /sys/fs/cgroup is $(stat -f -c %T /sys/fs/cgroup); $(grep -c . /proc/self/cgroup) line(s) in /proc/self/cgroup"
echo "guest: runc ${TEST_RUNC:-on PATH}: $(${TEST_RUNC:-runc} --version 2>&1 | head -n1); $(crun --version 2>&1 | head -n1); criu $(criu --version 2>&1 | sed -n 's/^Version: //p')"

export SHIM_BINARY=$repo/bin/containerd-shim-example-v2
export TEST_FLAVORS="1.6 2.x" TEST_SMOKE_FLAVORS=none
export GOTRACEBACK=all
cd "$repo/integration" || exit 126
exec "$bin" -test.v -test.count=1 -test.timeout="${CGROUP2_TEST_TIMEOUT:-50m}" -test.run "$run" "$@"
