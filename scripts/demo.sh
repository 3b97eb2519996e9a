#!/usr/bin/env bash
# Runs one container through containerd-shim-example-v2 under a private
# containerd (its own root, state and socket), prints what the container
# printed and its exit code, then tears everything down.
#
#   CONTAINERD=1.6 (default, Debian's), CONTAINERD=2.x (the newest 2.x, built by
#   scripts/deps.sh into /opt/containerd/<release>/bin) or CONTAINERD=v2.2.9 (any release built there)
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
flavor="${CONTAINERD:-1.6}"
case "$flavor" in
	1.6) containerd=/usr/bin/containerd ctr=/usr/bin/ctr cfgversion=2 ;;
	2.x) containerd=/opt/containerd/v2.4.2/bin/containerd ctr=/opt/containerd/v2.4.2/bin/ctr cfgversion=3 ;;
	v1.7.*) containerd=/opt/containerd/$flavor/bin/containerd ctr=/opt/containerd/$flavor/bin/ctr cfgversion=2 ;;
	v2.*) containerd=/opt/containerd/$flavor/bin/containerd ctr=/opt/containerd/$flavor/bin/ctr cfgversion=3 ;;
	*) echo "CONTAINERD must be 1.6, 2.x or a release built by scripts/deps.sh (v2.2.9)" >&2; exit 2 ;;
esac

work="$(mktemp -d /run/example-demo.XXXXXX)"
pid=""
cleanup() {
	set +e
	"$ctr" --address "$work/c.sock" -n demo task kill -s SIGKILL demo >/dev/null 2>&1
	"$ctr" --address "$work/c.sock" -n demo container rm demo >/dev/null 2>&1
	[ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
	grep " $work" /proc/self/mountinfo | awk '{print $5}' | sort -r | xargs -r -n1 umount -l 2>/dev/null
	rm -rf "$work"
	# runc's parents for the "demo" namespace (cgroups, state dir); rmdir only
	# removes them when empty, so nothing else using that namespace is touched.
	rmdir /sys/fs/cgroup/*/demo /run/containerd/runc/demo 2>/dev/null
	return 0
}
trap cleanup EXIT

mkdir -p "$work/bin"
ln -s "$repo/bin/containerd-shim-example-v2" "$work/bin/containerd-shim-example-v2"
cat > "$work/config.toml" <<TOML
version = $cfgversion
root = "$work/root"
state = "$work/state"
[grpc]
  address = "$work/c.sock"
[ttrpc]
  address = "$work/c.sock.ttrpc"
TOML
echo "== building the test image (busybox-static)"
archive="$(cd "$repo/integration" && go run ./cmd/mkimage)"

echo "== starting a private containerd $flavor in $work"
PATH="$work/bin:$PATH" "$containerd" --config "$work/config.toml" >"$work/containerd.log" 2>&1 &
pid=$!
for _ in $(seq 100); do "$ctr" --address "$work/c.sock" version >/dev/null 2>&1 && break; sleep 0.1; done
"$ctr" --address "$work/c.sock" -n demo images import "$archive" >/dev/null

echo "== ctr run --rm --runtime io.example.v2 example.test/busybox:latest demo sh -c 'echo hello from io.example.v2; echo to stderr >&2; exit 3'"
set +e
"$ctr" --address "$work/c.sock" -n demo run --rm --runtime io.example.v2 example.test/busybox:latest demo \
	sh -c 'echo hello from io.example.v2; echo to stderr >&2; exit 3' </dev/null
code=$?
set -e
echo "== container exit code: $code (expected 3)"
[ "$code" -eq 3 ]
