#!/usr/bin/env bash
# Installs what the shim's build and tests need on a fresh Debian machine.
# Idempotent: every step checks first, so a machine that has it all costs seconds.
#
# What goes where (the integration harness looks in the same places, see
# integration/harness/env.go):
#   Debian:      containerd 1.6, runc 1.1.5, crun, criu, busybox-static, protoc,
#                e2fsprogs (mkfs.ext4: the blockfile snapshotter test), fuse3 and
#                fuse-overlayfs (rootfs mounts through a FUSE mount helper), uidmap
#                (newuidmap: the rootless containerd test's user namespace)
#   the user ex-rootless, with a range of subordinate ids: the rootless containerd test
#   /opt/containerd/<version>/bin   containerd, ctr, containerd-shim-runc-v2 (go install)
#   /opt/runc/<version>/runc        runc built from the Go module proxy (seccomp, cgo)
#
# Profiles: `deps.sh` (make deps) installs everything `make test` uses: the full-suite
# containerd releases, the smoke-tested ones, runc, Docker Engine (scripts/deps-docker.sh), CNI
# plugins (scripts/deps-cni.sh) and the cgroup v2 lane's qemu and kernel (scripts/cgroup2/deps.sh);
# `deps.sh demo` only what `make demo` needs (Debian's packages and the newest 2.x).
# CONTAINERD_VERSIONS and RUNC_VERSIONS override the lists.
set -euo pipefail
cd "$(dirname "$0")"
profile="${1:-all}"

# The newest 2.x runs the full suite; 2.2 is the last release without the 2.3 bootstrap.
CONTAINERD_FULL="v2.4.2 v2.2.9"
# Smoke-tested only: the other release lines still in the field.
CONTAINERD_SMOKE="v1.7.35 v2.0.14 v2.1.9 v2.3.7"
case "$profile" in
all) default_containerd="$CONTAINERD_FULL $CONTAINERD_SMOKE" default_runc=v1.5.1 ;;
demo) default_containerd=v2.4.2 default_runc= ;;
*) echo "usage: deps.sh [all|demo]" >&2; exit 2 ;;
esac
CONTAINERD_VERSIONS="${CONTAINERD_VERSIONS:-$default_containerd}"
RUNC_VERSIONS="${RUNC_VERSIONS-$default_runc}"
PROTOC_GEN_GO_VERSION="${PROTOC_GEN_GO_VERSION:-v1.36.11}"
STATICCHECK_VERSION="${STATICCHECK_VERSION:-v0.8.2}"

need_apt=()
for pkg_bin in containerd:/usr/bin/containerd runc:/usr/sbin/runc crun:/usr/bin/crun criu:/usr/sbin/criu \
	busybox-static:/bin/busybox protobuf-compiler:/usr/bin/protoc \
	libseccomp-dev:/usr/include/seccomp.h pkg-config:/usr/bin/pkg-config e2fsprogs:/usr/sbin/mkfs.ext4 \
	fuse3:/usr/sbin/mount.fuse3 fuse-overlayfs:/usr/bin/fuse-overlayfs uidmap:/usr/bin/newuidmap \
	gcc:/usr/bin/gcc libc6-dev:/usr/include/stdio.h; do
	pkg=${pkg_bin%%:*} bin=${pkg_bin#*:}
	[ -e "$bin" ] || need_apt+=("$pkg")
done
if [ ${#need_apt[@]} -gt 0 ]; then
	echo "deps: installing Debian packages: ${need_apt[*]}"
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi
# The unprivileged user that TestRootlessContainerd runs containerd as (inside a user
# namespace, as rootlesskit does), with 65536 subordinate uids and gids for its containers.
if ! id -u ex-rootless >/dev/null 2>&1; then
	useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin ex-rootless
fi
if ! grep -q '^ex-rootless:' /etc/subuid || ! grep -q '^ex-rootless:' /etc/subgid; then
	usermod --add-subuids 3000000-3065535 --add-subgids 3000000-3065535 ex-rootless
fi

# Debian's containerd package may start a system daemon where systemd runs; our tests
# never use it (each test starts a private one), so it is left alone.

# build_module MODULE VERSION OUTDIR PKG... : the module's source from the Go module
# proxy, built as the main module (so its own go.mod directives apply: `go install
# pkg@version` refuses modules with replace or exclude lines, as containerd 1.7 has).
build_module() {
	local mod=$1 v=$2 out=$3 src work p
	shift 3
	src=$(go mod download -json "$mod@$v" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')
	[ -d "$src" ] || { echo "deps: go mod download of $mod@$v gave no directory" >&2; return 1; }
	work=$(mktemp -d)
	cp -r "$src/." "$work"
	chmod -R u+w "$work"
	mkdir -p "$out"
	for p in "$@"; do
		(cd "$work" && go build -mod=mod -trimpath $BUILD_FLAGS -o "$out/" "$p") || { rm -rf "$work"; return 1; }
	done
	rm -rf "$work"
}

# containerd <version> into /opt/containerd/<version>/bin. 1.x lives in the
# module github.com/containerd/containerd, 2.x in .../containerd/v2.
install_containerd() {
	local v=$1 dir=/opt/containerd/$1/bin
	if [ -x "$dir/containerd" ] && "$dir/containerd" --version | grep -qE " v?${v#v}([+ ]|$)"; then
		return
	fi
	echo "deps: building containerd $v into $dir"
	local start=$SECONDS
	local mod=github.com/containerd/containerd
	case "$v" in v2.*) mod=$mod/v2 ;; esac
	# Built as the main module: `go install pkg@version` refuses releases whose
	# go.mod has exclude lines (1.7.x, 2.0.x).
	BUILD_FLAGS="-ldflags=-X=$mod/version.Version=$v" \
		build_module "$mod" "$v" "$dir" ./cmd/containerd ./cmd/ctr ./cmd/containerd-shim-runc-v2
	echo "deps: containerd $v built in $((SECONDS - start)) s"
}

# runc <version> into /opt/runc/<version>/runc, built the way runc's Makefile
# does (cgo, seccomp).
install_runc() {
	local v=$1 dir=/opt/runc/$1
	if [ -x "$dir/runc" ] && "$dir/runc" --version | grep -q "version ${v#v}"; then
		return
	fi
	echo "deps: building runc $v into $dir"
	local start=$SECONDS
	CGO_ENABLED=1 BUILD_FLAGS="-tags=seccomp -ldflags=-X=main.version=${v#v}" \
		build_module github.com/opencontainers/runc "$v" "$dir" .
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
# containerd's fuse-overlayfs snapshotter (a proxy plugin), for the rootfs-through-a-FUSE-helper test
# (integration/snapshotter_test.go).
FUSE_OVERLAYFS_SNAPSHOTTER_VERSION="${FUSE_OVERLAYFS_SNAPSHOTTER_VERSION:-v2.1.7}"
fos_dir=/opt/fuse-overlayfs-snapshotter/$FUSE_OVERLAYFS_SNAPSHOTTER_VERSION
if [ "$profile" = all ] && [ ! -x "$fos_dir/containerd-fuse-overlayfs-grpc" ]; then
	echo "deps: installing containerd-fuse-overlayfs-grpc $FUSE_OVERLAYFS_SNAPSHOTTER_VERSION"
	GOBIN="$fos_dir" go install "github.com/containerd/fuse-overlayfs-snapshotter/v2/cmd/containerd-fuse-overlayfs-grpc@$FUSE_OVERLAYFS_SNAPSHOTTER_VERSION"
fi
if [ "$profile" = all ]; then
	bash deps-docker.sh # dockerd (integration/docker_test.go)
	bash deps-cni.sh    # CNI plugins for pod networks (integration/sandbox_test.go)
	bash cgroup2/deps.sh # qemu and Debian's kernel for the cgroup v2 lane
fi
echo "deps: ok"
