#!/usr/bin/env bash
# Installs what the shim's build and tests need on a fresh Debian machine.
# Idempotent: every step checks first, so a machine that has it all costs seconds.
#
# What goes where (the integration harness looks in the same places, see
# integration/harness/env.go):
#   Debian:      containerd 1.6, runc 1.1.5, crun, criu, busybox-static, protoc
#   /opt/containerd/<version>/bin   containerd, ctr, containerd-shim-runc-v2 (go install)
#   /opt/runc/<version>/runc        runc built from the Go module proxy (seccomp, cgo)
#
# CONTAINERD_VERSIONS and RUNC_VERSIONS choose what is built; `scripts/deps.sh matrix`
# adds every containerd of the compatibility matrix (make matrix).
set -euo pipefail
cd "$(dirname "$0")"

# The newest 2.x runs the full suite; 2.2 is the last release without the 2.3 bootstrap.
CONTAINERD_FULL="v2.4.2 v2.2.9"
# Smoke-tested only (make matrix): the other release lines still in the field.
CONTAINERD_SMOKE="v1.7.35 v2.0.14 v2.1.9 v2.3.7"
CONTAINERD_VERSIONS="${CONTAINERD_VERSIONS:-$CONTAINERD_FULL}"
[ "${1:-}" = matrix ] && CONTAINERD_VERSIONS="$CONTAINERD_VERSIONS $CONTAINERD_SMOKE"
RUNC_VERSIONS="${RUNC_VERSIONS:-v1.5.1}"
PROTOC_GEN_GO_VERSION="${PROTOC_GEN_GO_VERSION:-v1.36.11}"
STATICCHECK_VERSION="${STATICCHECK_VERSION:-v0.8.2}"

need_apt=()
for pkg_bin in containerd:/usr/bin/containerd runc:/usr/sbin/runc crun:/usr/bin/crun criu:/usr/sbin/criu \
	busybox-static:/bin/busybox protobuf-compiler:/usr/bin/protoc \
	libseccomp-dev:/usr/include/seccomp.h pkg-config:/usr/bin/pkg-config; do
	pkg=${pkg_bin%%:*} bin=${pkg_bin#*:}
	[ -e "$bin" ] || need_apt+=("$pkg")
done
if [ ${#need_apt[@]} -gt 0 ]; then
	echo "deps: installing Debian packages: ${need_apt[*]}"
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi
# Debian's containerd package may start a system daemon where systemd runs; our tests
# never use it (each test starts a private one), so it is left alone.

# containerd <version> into /opt/containerd/<version>/bin. 1.x lives in the
# module github.com/containerd/containerd, 2.x in .../containerd/v2.
install_containerd() {
	local v=$1 dir=/opt/containerd/$1/bin mod
	if [ -x "$dir/containerd" ] && "$dir/containerd" --version | grep -qF " ${v#v}"; then
		return
	fi
	case "$v" in
	v1.*) mod=github.com/containerd/containerd ;;
	*) mod=github.com/containerd/containerd/v2 ;;
	esac
	echo "deps: building containerd $v into $dir"
	mkdir -p "$dir"
	local start=$SECONDS
	GOBIN="$dir" GOFLAGS=-mod=mod go install \
		"$mod/cmd/containerd@$v" "$mod/cmd/ctr@$v" "$mod/cmd/containerd-shim-runc-v2@$v"
	echo "deps: containerd $v built in $((SECONDS - start)) s"
}

# runc <version> into /opt/runc/<version>/runc: the module's source from the Go
# module proxy, built the way runc's Makefile does (cgo, seccomp).
install_runc() {
	local v=$1 dir=/opt/runc/$1
	if [ -x "$dir/runc" ] && "$dir/runc" --version | grep -q "version ${v#v}"; then
		return
	fi
	echo "deps: building runc $v into $dir"
	local start=$SECONDS src work
	src=$(go mod download -json "github.com/opencontainers/runc@$v" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')
	[ -d "$src" ] || { echo "deps: go mod download of runc $v gave no directory" >&2; exit 1; }
	work=$(mktemp -d)
	cp -r "$src/." "$work"
	chmod -R u+w "$work"
	mkdir -p "$dir"
	(cd "$work" && CGO_ENABLED=1 go build -mod=mod -trimpath -tags seccomp \
		-ldflags "-X main.version=${v#v}" -o "$dir/runc" .)
	rm -rf "$work"
	echo "deps: runc $v built in $((SECONDS - start)) s"
}

for v in $CONTAINERD_VERSIONS; do install_containerd "$v"; done
for v in $RUNC_VERSIONS; do install_runc "$v"; done

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
