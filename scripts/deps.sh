#!/usr/bin/env bash
# Installs what the shim's build and tests need on a fresh Debian machine.
# Idempotent: every step checks first, so a machine that has it all costs seconds.
set -euo pipefail

CONTAINERD2_VERSION="${CONTAINERD2_VERSION:-v2.2.9}"
CONTAINERD2_DIR="${CONTAINERD2_DIR:-/opt/containerd2/bin}"
PROTOC_GEN_GO_VERSION="${PROTOC_GEN_GO_VERSION:-v1.36.11}"
STATICCHECK_VERSION="${STATICCHECK_VERSION:-v0.8.2}"

need_apt=()
for pkg_bin in containerd:/usr/bin/containerd runc:/usr/sbin/runc crun:/usr/bin/crun criu:/usr/sbin/criu \
	busybox-static:/bin/busybox protobuf-compiler:/usr/bin/protoc; do
	pkg=${pkg_bin%%:*} bin=${pkg_bin#*:}
	[ -x "$bin" ] || need_apt+=("$pkg")
done
if [ ${#need_apt[@]} -gt 0 ]; then
	echo "deps: installing Debian packages: ${need_apt[*]}"
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi
# Debian's containerd package may start a system daemon where systemd runs; our tests
# never use it (each test starts a private one), so it is left alone.

if [ ! -x "$CONTAINERD2_DIR/containerd" ] || ! "$CONTAINERD2_DIR/containerd" --version | grep -q "${CONTAINERD2_VERSION#v}"; then
	echo "deps: building containerd $CONTAINERD2_VERSION into $CONTAINERD2_DIR"
	mkdir -p "$CONTAINERD2_DIR"
	GOBIN="$CONTAINERD2_DIR" go install \
		"github.com/containerd/containerd/v2/cmd/containerd@$CONTAINERD2_VERSION" \
		"github.com/containerd/containerd/v2/cmd/ctr@$CONTAINERD2_VERSION" \
		"github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2@$CONTAINERD2_VERSION"
fi

gobin="$(go env GOPATH)/bin"
if [ ! -x "$gobin/protoc-gen-go" ]; then
	echo "deps: installing protoc-gen-go $PROTOC_GEN_GO_VERSION"
	go install "google.golang.org/protobuf/cmd/protoc-gen-go@$PROTOC_GEN_GO_VERSION"
fi
if ! "$gobin/staticcheck" -version 2>/dev/null | grep -q "${STATICCHECK_VERSION#v}"; then
	echo "deps: installing staticcheck $STATICCHECK_VERSION"
	go install "honnef.co/go/tools/cmd/staticcheck@$STATICCHECK_VERSION"
fi
echo "deps: ok"
