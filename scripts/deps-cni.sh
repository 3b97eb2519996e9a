#!/usr/bin/env bash
# Installs the CNI plugins the pod-network tests use (integration/sandbox_test.go):
# bridge, host-local (IPAM) and loopback, built from the Go module proxy into
# /opt/cni-plugins/<version>/bin. The harness points a CRI daemon's bin_dirs there
# (harness.CNIPluginDir) when a test asks for a pod network.
# Idempotent: a directory holding every plugin at the wanted version is kept.
set -euo pipefail

CNI_PLUGINS_VERSION="${CNI_PLUGINS_VERSION:-v1.9.1}"
PLUGINS="main/bridge ipam/host-local main/loopback"

dir=/opt/cni-plugins/$CNI_PLUGINS_VERSION/bin
have=1
for p in $PLUGINS; do
	[ -x "$dir/${p#*/}" ] || have=0
done
if [ "$have" = 1 ] && [ "$(cat "$dir/VERSION" 2>/dev/null)" = "$CNI_PLUGINS_VERSION" ]; then
	echo "deps-cni: ok (CNI plugins $CNI_PLUGINS_VERSION in $dir)"
	exit 0
fi
echo "deps-cni: building CNI plugins $CNI_PLUGINS_VERSION into $dir"
start=$SECONDS
mkdir -p "$dir"
pkgs=()
for p in $PLUGINS; do
	pkgs+=("github.com/containernetworking/plugins/plugins/$p@$CNI_PLUGINS_VERSION")
done
# Static, like the release tarballs: the plugins run in whatever namespace CRI gives them.
CGO_ENABLED=0 GOBIN="$dir" go install -trimpath \
	-ldflags "-X github.com/containernetworking/plugins/pkg/utils/buildversion.BuildVersion=$CNI_PLUGINS_VERSION" \
	"${pkgs[@]}"
echo "$CNI_PLUGINS_VERSION" >"$dir/VERSION"
echo "deps-cni: CNI plugins $CNI_PLUGINS_VERSION built in $((SECONDS - start)) s"
