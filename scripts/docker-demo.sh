#!/usr/bin/env bash
# Runs one container through containerd-shim-example-v2 with Docker Engine: a private
# containerd 2.4.2 (runc 1.5.1 first on its PATH, as Docker needs runc >= 1.2) and a private
# dockerd on it, each with its own directories under /run. Prints what the container
# printed and its exit code, then tears everything down (by PID) on exit.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
containerd_dir=/opt/containerd/v2.4.2/bin
runc=/opt/runc/v1.5.1/runc
dockerd=/opt/moby/v2.0.0-beta.24/bin/dockerd
image=example.test/busybox:latest
# containerd namespace and cgroup parent of docker's containers (docker's defaults are
# "moby" and "/docker", which a Docker Engine of the host would share).
ns=docker-demo

echo "== checking prerequisites (scripts/deps.sh, scripts/deps-docker.sh)"
RUNC_VERSIONS=v1.5.1 bash "$repo/scripts/deps.sh" demo
bash "$repo/scripts/deps-docker.sh"

work="$(mktemp -d /run/example-docker-demo.XXXXXX)"
containerd_pid="" dockerd_pid=""
made_run_docker=""
[ -e /run/docker ] || made_run_docker=1
export DOCKER_HOST="unix://$work/docker.sock" DOCKER_CONFIG="$work/cli"
unset DOCKER_CONTEXT

# stop_pid PID SECONDS: SIGTERM, then SIGKILL if it is still there after SECONDS.
stop_pid() {
	local pid=$1 i
	kill "$pid" 2>/dev/null || return 0
	for ((i = 0; i < $2 * 10; i++)); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	kill -9 "$pid" 2>/dev/null
	wait "$pid" 2>/dev/null
}

cleanup() {
	set +e
	if [ -n "$dockerd_pid" ]; then
		ids=$(docker ps -aq 2>/dev/null)
		[ -n "$ids" ] && docker rm -f $ids >/dev/null 2>&1
		stop_pid "$dockerd_pid" 20
	fi
	[ -n "$containerd_pid" ] && stop_pid "$containerd_pid" 10
	# Shims this containerd started and left (found by its socket on their command line).
	for p in /proc/[0-9]*; do
		tr '\0' ' ' 2>/dev/null <"$p/cmdline" | grep -qF -- "-address $work/c.sock " && kill -9 "${p#/proc/}" 2>/dev/null
	done
	grep " $work" /proc/self/mountinfo | awk '{print $5}' | sort -r | xargs -r -n1 umount -l 2>/dev/null
	rm -rf "$work"
	# The parents of the demo's containers (cgroups, runc state); rmdir removes them only
	# when empty. dockerd's host-wide plugin socket dir goes if this run made it.
	rmdir /sys/fs/cgroup/*/"$ns" /sys/fs/cgroup/unified/"$ns" /run/containerd/runc/"$ns" 2>/dev/null
	[ -n "$made_run_docker" ] && rmdir /run/docker/plugins /run/docker 2>/dev/null
	return 0
}
trap cleanup EXIT

mkdir -p "$work/bin" "$work/cli"
ln -s "$repo/bin/containerd-shim-example-v2" "$work/bin/containerd-shim-example-v2"
ln -s "$runc" "$work/bin/runc"
cat >"$work/config.toml" <<TOML
version = 3
root = "$work/root"
state = "$work/state"
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.cri.v1.images", "io.containerd.cri.v1.runtime", "io.containerd.podsandbox.controller.v1.podsandbox", "io.containerd.nri.v1.nri"]
[grpc]
  address = "$work/c.sock"
[ttrpc]
  address = "$work/c.sock.ttrpc"
TOML
cat >"$work/daemon.json" <<JSON
{
  "runtimes": {
    "example": { "runtimeType": "io.example.v2" }
  }
}
JSON
echo "== building the test image (busybox-static)"
archive="$(cd "$repo/integration" && go run ./cmd/mkimage)"

path="$work/bin:$containerd_dir:$PATH"
echo "== starting a private containerd 2.4.2 in $work"
(cd "$work" && PATH="$path" exec "$containerd_dir/containerd" --config "$work/config.toml") >"$work/containerd.log" 2>&1 &
containerd_pid=$!
for _ in $(seq 100); do "$containerd_dir/ctr" --address "$work/c.sock" version >/dev/null 2>&1 && break; sleep 0.1; done

echo "== starting a private dockerd $("$dockerd" --version | awk '{print $3}' | tr -d ,) on it"
PATH="$path" "$dockerd" --config-file "$work/daemon.json" --containerd "$work/c.sock" \
	--containerd-namespace "$ns" --containerd-plugins-namespace "$ns-plugins" --cgroup-parent "/$ns" \
	--data-root "$work/docker" --exec-root "$work/x" --pidfile "$work/dockerd.pid" --host "$DOCKER_HOST" \
	--iptables=false --ip6tables=false --bridge=none --userland-proxy=false >"$work/dockerd.log" 2>&1 &
dockerd_pid=$!
for _ in $(seq 300); do docker version >/dev/null 2>&1 && break; sleep 0.1; done
docker version --format 'client API {{.Client.APIVersion}}, server {{.Server.Version}} (API {{.Server.APIVersion}})'
docker load -i "$archive"

echo "== docker run --rm --runtime io.example.v2 --network none $image sh -c 'echo hello from docker; exit 3'"
set +e
docker run --rm --runtime io.example.v2 --network none "$image" sh -c 'echo hello from docker; exit 3' </dev/null
code=$?
set -e
echo "exit code: $code"
[ "$code" -eq 3 ]
