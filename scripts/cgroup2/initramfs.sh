#!/usr/bin/env bash
# Builds the cgroup v2 guest's initramfs: Debian's static busybox (every applet linked),
# the guest init (scripts/cgroup2/init), and the kernel modules the init loads before it
# can reach the host's root over 9p (virtio PCI, 9p, overlay), in load order.
#
#   initramfs.sh <kernel version> <output .cpio.gz>
#
# The modules come from /lib/modules/<kernel version>; compressed ones (.ko.xz, .ko.zst,
# .ko.gz) are decompressed here, because busybox's insmod loads plain .ko files only.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
kver=${1:?usage: initramfs.sh <kernel version> <output .cpio.gz>}
out=${2:?usage: initramfs.sh <kernel version> <output .cpio.gz>}
moddir=/lib/modules/$kver
busybox=/bin/busybox

# What the init needs loaded; their dependencies are added from modules.dep.
MODULES="virtio_pci 9pnet_virtio 9p overlay"

[ -f "$moddir/modules.dep" ] || { echo "initramfs: no $moddir/modules.dep (is linux-image-$kver installed?)" >&2; exit 1; }
if ! "$busybox" --list >/dev/null 2>&1 || ldd "$busybox" >/dev/null 2>&1; then
	echo "initramfs: $busybox is not a static busybox (apt-get install busybox-static)" >&2
	exit 1
fi

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage"/{bin,sbin,usr/bin,usr/sbin,dev,proc,sys,run,mnt/lower,mnt/rw,newroot,lib/modules,etc}
cp "$busybox" "$stage/bin/busybox"
for applet in $("$busybox" --list-full); do
	[ -e "$stage/$applet" ] || ln -s /bin/busybox "$stage/$applet"
done
install -m 0755 "$here/init" "$stage/init"
install -m 0755 "$here/stage2" "$stage/stage2"
# The kernel opens /dev/console for init before any devtmpfs is mounted.
mknod -m 0600 "$stage/dev/console" c 5 1 2>/dev/null || true

# resolve MODULE: appends MODULE's dependencies, then MODULE, to $order (each once).
# modules.dep lists a module's dependencies so that the last one is loaded first.
declare -A seen=()
order=()
add() {
	[ -n "${seen[$1]:-}" ] && return
	seen[$1]=1
	order+=("$1")
}
resolve() {
	local line path deps i
	line=$(grep -E "/$1\.ko(\.[a-z]+)?:" "$moddir/modules.dep" | head -n1)
	[ -n "$line" ] || { echo "initramfs: module $1 not in $moddir/modules.dep" >&2; exit 1; }
	path=${line%%:*}
	read -r -a deps <<<"${line#*:}"
	for ((i = ${#deps[@]} - 1; i >= 0; i--)); do
		add "${deps[i]}"
	done
	add "$path"
}
for m in $MODULES; do
	resolve "$m"
done
: >"$stage/etc/modules.load"
for path in "${order[@]}"; do
	name=$(basename "$path")
	case "$name" in
	*.ko) cp "$moddir/$path" "$stage/lib/modules/$name" ;;
	*.ko.xz) xz -dc "$moddir/$path" >"$stage/lib/modules/${name%.xz}" ;;
	*.ko.zst) zstd -qdc "$moddir/$path" >"$stage/lib/modules/${name%.zst}" ;;
	*.ko.gz) gzip -dc "$moddir/$path" >"$stage/lib/modules/${name%.gz}" ;;
	*) echo "initramfs: unexpected module file $path" >&2; exit 1 ;;
	esac
	echo "${name%.ko*}.ko" >>"$stage/etc/modules.load"
done

mkdir -p "$(dirname "$out")"
(cd "$stage" && find . -print0 | cpio --null -o -H newc --quiet) | gzip -1 >"$out.tmp"
mv "$out.tmp" "$out"
