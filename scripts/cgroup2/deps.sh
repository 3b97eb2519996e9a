#!/usr/bin/env bash
# Installs what the cgroup v2 lane needs beside `make deps`: QEMU, Debian's kernel (the guest
# boots it; the host's own kernel is not used), cpio for the initramfs, the static busybox
# the initramfs is made of, and iptables (CRIU locks a container's network namespace with
# ip6tables-restore while it dumps; in the guest, where CRIU works, a checkpoint needs it).
# Idempotent: a machine that has it all costs a second.
set -euo pipefail

need=()
for pkg_path in qemu-system-x86:/usr/bin/qemu-system-x86_64 cpio:/usr/bin/cpio busybox-static:/bin/busybox \
	iptables:/usr/sbin/ip6tables-restore; do
	pkg=${pkg_path%%:*} path=${pkg_path#*:}
	[ -e "$path" ] || need+=("$pkg")
done
# The kernel: any installed Debian kernel with its modules will do (run.sh picks the newest).
compgen -G '/boot/vmlinuz-*' >/dev/null && compgen -G '/lib/modules/*/kernel/fs/9p' >/dev/null || need+=(linux-image-amd64)
[ ${#need[@]} -eq 0 ] && exit 0

echo "cgroup2 deps: installing Debian packages: ${need[*]}"
apt-get update -qq
# Other jobs on the machine may hold the dpkg lock for a while: wait for it.
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	-o DPkg::Lock::Timeout=600 "${need[@]}" >/dev/null
