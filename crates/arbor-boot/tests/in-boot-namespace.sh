#!/bin/sh
# Run as: unshare --mount --propagation private sh in-boot-namespace.sh SYSROOT CMDLINE_FILE CMD...
# With BOOT_NS_READONLY_COPY_OF=DIR, SYSROOT is a read-only tmpfs holding a copy of DIR.
# Inside a private mount namespace, mimics the initramfs: SYSROOT a mount
# point, a private /run, CMDLINE_FILE as /proc/cmdline; runs `CMD... SYSROOT`
# and then prints what the tests check. The host's mounts never change.
set -eu
sysroot=$1 cmdline=$2
shift 2
if [ -n "${BOOT_NS_READONLY_COPY_OF:-}" ]; then
	# The physical root as initramfs-tools mounts it without `rw`: a
	# read-only filesystem (a copy of the given sysroot on a tmpfs).
	mount -t tmpfs tmpfs "$sysroot"
	cp -a "$BOOT_NS_READONLY_COPY_OF/." "$sysroot/"
	mount -o remount,ro "$sysroot"
else
	mount --bind "$sysroot" "$sysroot"
fi
mount -t tmpfs tmpfs /run
mount --bind "$cmdline" /proc/cmdline
"$@" "$sysroot"
echo "== mountinfo"
cat /proc/self/mountinfo
echo "== root"
stat -c '%d %i' "$sysroot"
echo "== booted"
od -An -v -tx1 /run/ostree-booted | tr -d ' \n'
echo
echo "== stamps"
for f in ostree/initramfs-mount-var ostree-sysroot-ro.stamp; do
	if test -e "/run/$f"; then echo "$f"; fi
done
echo "== writable"
for d in etc var usr sysroot; do
	if touch "$sysroot/$d/.probe" 2>/dev/null; then
		rm "$sysroot/$d/.probe"
		echo "$d rw"
	else
		echo "$d ro"
	fi
done
echo "== end"
