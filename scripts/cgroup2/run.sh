#!/usr/bin/env bash
# Runs a command in a QEMU guest whose only cgroup hierarchy is cgroup v2, and exits with the
# command's exit code (docs/cgroup2.md).
#
#   scripts/cgroup2/run.sh <command> [args...]
#
# The guest boots Debian's kernel (linux-image-amd64, not the host's) under TCG with a
# busybox initramfs (initramfs.sh, init); its root is this host's root, read-only over 9p
# under a tmpfs overlay, so every host path (this checkout, bin/, /usr/local/go,
# /opt/containerd, /opt/runc ...) is at the same place in the guest. /run and /tmp are the
# guest's own tmpfs; the checkout, the working directory and the job directory are bound
# back in when they live there. The command runs as root with the host's working directory,
# under bash, with a minimal environment (PATH, HOME, TERM): pass variables with env(1).
#
# The console (kernel, init, the command's output) streams to stdout and to the log file.
# Exit status: the command's; 124 when the run exceeds CGROUP2_TIMEOUT; 125 when the guest
# does not boot, its setup fails, or it stops without reporting the command's exit.
#
# Environment:
#   CGROUP2_TIMEOUT       seconds for the whole run, boot included (default 3600)
#   CGROUP2_BOOT_TIMEOUT  seconds until the guest has set up and starts the command (300)
#   CGROUP2_MEM           guest memory in MiB (4096)
#   CGROUP2_SMP           guest CPUs (2)
#   CGROUP2_LOG           console log (default bin/cgroup2/console.log in this checkout)
#   CGROUP2_QUIET=1       do not stream the console to stdout (the log still has it)
#   CGROUP2_KERNEL        kernel version to boot (default: the newest Debian one installed)
#   CGROUP2_SYSTEMD=1     the guest's PID 1 is systemd (the host's), and the command runs as
#                         one of its services, with Delegate=yes as containerd.service has it
#                         (stage2); by default a shell is PID 1 and systemd does not run
#   CGROUP2_LEGACY=1      with CGROUP2_SYSTEMD=1: cgroup v1 instead, systemd's hybrid layout (the
#                         init mounts no cgroup2 tree; systemd mounts its hierarchies)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
[ $# -gt 0 ] || { echo "usage: run.sh <command> [args...]" >&2; exit 2; }

timeout_s=${CGROUP2_TIMEOUT:-3600}
boot_timeout_s=${CGROUP2_BOOT_TIMEOUT:-300}
mem=${CGROUP2_MEM:-4096}
smp=${CGROUP2_SMP:-2}
log=${CGROUP2_LOG:-$repo/bin/cgroup2/console.log}

bash "$here/deps.sh"

# The kernel: Debian's, with the modules the initramfs needs (the host's own kernel has no
# /lib/modules here and may not be bootable by QEMU at all).
pick_kernel() {
	local v best=
	for v in /boot/vmlinuz-*; do
		v=${v#/boot/vmlinuz-}
		[ -d "/lib/modules/$v/kernel/fs/9p" ] || continue
		if [ -z "$best" ] || [ "$(printf '%s\n%s\n' "$best" "$v" | sort -V | tail -n1)" = "$v" ]; then
			best=$v
		fi
	done
	echo "$best"
}
kver=${CGROUP2_KERNEL:-$(pick_kernel)}
[ -n "$kver" ] && [ -r "/boot/vmlinuz-$kver" ] || { echo "run.sh: no Debian kernel with 9p modules in /boot (scripts/cgroup2/deps.sh)" >&2; exit 125; }

job=$(mktemp -d "${TMPDIR:-/tmp}/ex-cgroup2.XXXXXX")
qpid= tpid=
cleanup() {
	# Only what this script started, by PID.
	[ -n "$qpid" ] && kill "$qpid" 2>/dev/null && wait "$qpid" 2>/dev/null
	[ -n "$tpid" ] && kill "$tpid" 2>/dev/null && wait "$tpid" 2>/dev/null
	rm -rf "$job"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# The command, as a bash script the guest runs from the host's working directory.
{
	printf 'cd -- %q || exit 126\n' "$PWD"
	printf 'exec'
	printf ' %q' "$@"
	printf '\n'
} >"$job/cmd"

# Host directories the guest's own /tmp and /run would hide: bound back in by the init.
binds=
for p in "$job" "$repo" "$PWD"; do
	case "$p" in
	*[[:space:],]*) echo "run.sh: path $p has blanks or commas; the guest cannot be told about it" >&2; exit 125 ;;
	/tmp/* | /run/*) binds="$binds${binds:+,}$p" ;;
	esac
done

bash "$here/initramfs.sh" "$kver" "$job/initramfs.cpio.gz"
mkdir -p "$(dirname "$log")"
: >"$log"

append="console=ttyS0 loglevel=3 panic=-1 cg2job=$job${binds:+ cg2bind=$binds}"
if [ "${CGROUP2_SYSTEMD:-}" = 1 ]; then
	append="$append cg2systemd=1"
fi
if [ "${CGROUP2_LEGACY:-}" = 1 ]; then
	# cgroup v1 instead, with CGROUP2_SYSTEMD=1 only: systemd mounts its hierarchies (legacy mode,
	# as on Ubuntu 20.04 or EL 8 nodes), told so by stage2.
	append="$append cg2legacy=1"
fi
start=$(date +%s)
echo "cgroup2: booting Linux $kver under TCG ($smp cpus, $mem MiB); console log $log"
qemu-system-x86_64 -accel tcg -cpu max -smp "$smp" -m "$mem" \
	-nodefaults -display none -monitor none -no-reboot \
	-kernel "/boot/vmlinuz-$kver" -initrd "$job/initramfs.cpio.gz" -append "$append" \
	-virtfs local,path=/,mount_tag=hostroot,security_model=passthrough,readonly=on,multidevs=remap \
	-serial "file:$log" </dev/null >"$job/qemu.out" 2>&1 &
qpid=$!
if [ "${CGROUP2_QUIET:-}" != 1 ]; then
	tail -n +1 -F --pid="$qpid" "$log" 2>/dev/null &
	tpid=$!
fi

# The console as text (the guest's tty ends lines with CR LF).
console() { tr -d '\r' <"$log"; }
# on_console PREFIX: whether a console line starts with PREFIX (grep reads the file itself:
# with pipefail, `console | grep -q` would fail when grep stops reading early).
on_console() { grep -a -q "^$1" "$log"; }
verdict=
while kill -0 "$qpid" 2>/dev/null; do
	sleep 1
	elapsed=$(($(date +%s) - start))
	if ! on_console GUEST-READY; then
		if on_console GUEST-SETUP-FAILED; then
			continue # the guest powers off by itself
		fi
		if [ "$elapsed" -ge "$boot_timeout_s" ]; then
			verdict="the guest did not come up within ${boot_timeout_s}s"
			break
		fi
	elif [ "$elapsed" -ge "$timeout_s" ]; then
		verdict="the run exceeded CGROUP2_TIMEOUT=${timeout_s}s"
		break
	fi
done
if [ -n "$verdict" ]; then
	kill "$qpid" 2>/dev/null || true
fi
wait "$qpid" 2>/dev/null || true
qpid=
if [ -n "$tpid" ]; then
	wait "$tpid" 2>/dev/null || true
	tpid=
fi
elapsed=$(($(date +%s) - start))

code=$(console | sed -n 's/^GUEST-EXIT=\([0-9][0-9]*\)$/\1/p' | tail -n1)
if [ -z "$verdict" ] && [ -n "$code" ]; then
	echo "cgroup2: guest command exited $code after ${elapsed}s (boot included)"
	exit "$code"
fi
if [ -z "$verdict" ]; then
	verdict=$(console | sed -n 's/^GUEST-SETUP-FAILED: /guest setup failed: /p' | tail -n1)
	verdict=${verdict:-"the guest stopped without reporting the command's exit (no GUEST-EXIT= line)"}
fi
{
	echo "cgroup2: FAILED after ${elapsed}s: $verdict"
	if [ -s "$job/qemu.out" ]; then
		echo "--- qemu:"
		cat "$job/qemu.out"
	fi
	echo "--- last 40 lines of the console ($log):"
	console | tail -n 40
} >&2
case "$verdict" in
*CGROUP2_TIMEOUT*) exit 124 ;;
esac
exit 125
