#!/usr/bin/env bash
# Disk images, side by side in one run, from the Debian OS commit that dist/os/mkdebian.sh builds
# (its debootstrap is cached in /var/cache/arbor-os):
#  (a) `arbor image build` of raw, qcow2 and erofs one format at a time, then all three at once
#      (target: all at once <= 0.7x the sum of the three single-format builds);
#  (b) the obvious alternative a user would script for the same raw + qcow2 output: a sparse file
#      partitioned with sfdisk (BIOS boot, /boot, root), loop-mounted, mkfs.ext4 on both, `ostree
#      admin init-fs` + `os-init` + `pull-local` + `ostree admin deploy` into it, `grub-install`
#      (BIOS) and a grub.cfg, unmount, `qemu-img convert` to qcow2, vs `arbor image build --format
#      raw,qcow2` (target: arbor >= 2x faster); once more with disk.raw synced at the end, as
#      arbor syncs what it publishes (qemu-img already flushes disk.qcow2);
#  (c) boot to `arbor-booted`: one boot of the raw image in QEMU (TCG unless a KVM probe guest
#      boots), the seconds to the marker unit's line and which accelerator ran.
# Needs root (loop devices, bare repositories). Env: RUNS=3 WARMUP=0 ARBOR=<repo>/target/release/arbor
# PARTS="formats alternative boot"
set -euo pipefail
[ $# -le 1 ] || { echo "usage: $0 [WORKDIR]  (env: RUNS WARMUP ARBOR PARTS)" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "$0: needs root (loop devices, bare repositories)" >&2; exit 1; }
RUNS=${RUNS:-3} WARMUP=${WARMUP:-0}
HERE=$(dirname "$(realpath "$0")")
ARBOR=$(realpath -m "${ARBOR:-$HERE/../target/release/arbor}")
W=$(realpath -m "${1:-/var/tmp/arbor-bench-image}")
. "$HERE/lib.sh"
. "$HERE/common.sh"
for t in ostree hyperfine python3 qemu-img sfdisk losetup mkfs.ext4 mkfs.erofs grub-install qemu-system-x86_64; do
  command -v $t >/dev/null || { echo "missing $t (apt-get install ostree hyperfine qemu-utils fdisk e2fsprogs erofs-utils grub-pc-bin qemu-system-x86)" >&2; exit 1; }
done
[ -x "$ARBOR" ] || { echo "arbor binary not found at $ARBOR: run 'cargo build --release'" >&2; exit 1; }
part() { [[ " ${PARTS:-formats alternative boot} " == *" $1 "* ]]; }
mkdir -p "$W" && cd "$W"
RES=$W/results
rm -rf "$RES" && mkdir -p "$RES"

# The OS commit (marker unit included, for the boot part).
if [ ! -d repo/objects ]; then
  PR=$HERE/../target/release/arbor-prepare-root
  (cd "$HERE/.." && cargo rustc --release -q -p arbor-boot --bin arbor-prepare-root -- -C target-feature=+crt-static)
  "$HERE/../dist/os/mkdebian.sh" --repo repo --ref bench/os --version 1 --arbor "$ARBOR" --prepare-root "$PR" \
    --extra "$HERE/../crates/arbor-vmtest/overlay" --enable arbor-test-marker.service >/dev/null
fi
C=$(ostree rev-parse --repo=repo bench/os)
size=$(du -sb --apparent-size repo/objects | cut -f1)
echo "OS commit $C, repository objects $((size / 1048576)) MiB" >&2

if part formats; then
  for f in raw qcow2 erofs raw,qcow2,erofs; do
    n=arbor.image-${f//,/+}
    bench "$n" "rm -rf out" "'$ARBOR' image build --repo repo --format $f -o out bench/os"
    rss "$n" "rm -rf out" "'$ARBOR' image build --repo repo --format $f -o out bench/os"
  done
fi

if part alternative; then
  cat >alt.sh <<EOF
#!/bin/bash
# The scripted route: loop-mounted image, ostree admin deploy, grub-install, qemu-img convert.
set -euo pipefail
rm -rf alt && mkdir -p alt/mnt && cd alt
truncate -s 4G disk.raw
printf 'label: gpt\nsize=1MiB, type=21686148-6449-6E6F-744E-656564454649\nsize=384MiB, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4\ntype=4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709\n' | sfdisk -q disk.raw
# One loop device for the disk, one per filesystem at its offset (no partition scan here).
part() { sfdisk -J disk.raw | python3 -c "import json,sys; p=json.load(sys.stdin)['partitiontable']['partitions'][\$1-1]; print(p['start']*512, p['size']*512)"; }
dev=\$(losetup -f --show disk.raw)
read -r o s < <(part 2); p2=\$(losetup -f --show -o \$o --sizelimit \$s disk.raw)
read -r o s < <(part 3); p3=\$(losetup -f --show -o \$o --sizelimit \$s disk.raw)
trap 'umount -R mnt 2>/dev/null || true; losetup -d \$p2 \$p3 \$dev' EXIT
mkfs.ext4 -q -L boot \$p2 && mkfs.ext4 -q -L root \$p3
mount \$p3 mnt && mkdir -p mnt/boot && mount \$p2 mnt/boot
ostree admin init-fs mnt >/dev/null
ostree admin os-init --sysroot=mnt debian >/dev/null
ostree --repo=mnt/ostree/repo pull-local ../repo $C >/dev/null
ostree --repo=mnt/ostree/repo refs --create=bench/os $C
ostree config --repo=mnt/ostree/repo set sysroot.bootloader none
ostree admin deploy --sysroot=mnt --os=debian --karg=root=LABEL=root --karg=console=ttyS0 bench/os >/dev/null
grub-install --target=i386-pc --boot-directory=mnt/boot --modules="part_gpt ext2" --force \$dev 2>/dev/null
printf 'set timeout=1\nconfigfile /loader/grub.cfg\n' >mnt/boot/grub/grub.cfg
umount -R mnt
qemu-img convert -f raw -O qcow2 disk.raw disk.qcow2
# qemu-img flushes disk.qcow2 when it closes it; with "sync", disk.raw too
# (arbor syncs every file it publishes): the same durability.
[ "\${1:-}" != sync ] || sync disk.raw
EOF
  chmod +x alt.sh
  bench ostree.loop-deploy-convert "{ chattr -R -i alt 2>/dev/null; rm -rf alt; }" "./alt.sh"
  rss ostree.loop-deploy-convert "{ chattr -R -i alt 2>/dev/null; rm -rf alt; }" "./alt.sh"
  bench ostree.loop-deploy-convert-sync "{ chattr -R -i alt 2>/dev/null; rm -rf alt; }" "./alt.sh sync"
  bench arbor.image-raw+qcow2 "rm -rf out" "'$ARBOR' image build --repo repo --format raw,qcow2 -o out bench/os"
fi

if part boot; then
  rm -rf out && "$ARBOR" image build --repo repo --format raw -o out bench/os >/dev/null
  accel=tcg
  K=$(ostree ls --repo=repo bench/os /usr/lib/modules | awk 'NR==2{print $NF}')
  ostree cat --repo=repo bench/os "$K/vmlinuz" >vmlinuz
  if [ -e /dev/kvm ] && timeout 20 qemu-system-x86_64 -accel kvm -m 256 -nographic -no-reboot -kernel vmlinuz \
       -append "console=ttyS0 panic=-1" 2>/dev/null | grep -q -m1 "Linux version"; then accel=kvm; fi
  t0=$(date +%s%N)
  qemu-system-x86_64 -accel $accel -m 1024 -smp 1 -nographic -no-reboot -nodefaults -display none \
    -drive file=out/disk.raw,format=raw,if=virtio,snapshot=on -serial file:boot.log &
  q=$!
  until grep -q "arbor-booted " boot.log 2>/dev/null; do
    sleep 0.2
    kill -0 $q 2>/dev/null || { echo "QEMU ended before arbor-booted" >&2; break; }
    [ $(( ($(date +%s%N) - t0) / 1000000000 )) -lt 600 ] || { echo "no arbor-booted within 600 s" >&2; break; }
  done
  t=$(( ($(date +%s%N) - t0) / 1000000 ))
  kill $q 2>/dev/null || true
  echo "boot to arbor-booted: $((t / 1000)).$(( t % 1000 / 100 )) s (accelerator: $accel)" | tee "$RES/boot.txt"
fi

{
  echo "# $(ostree --version | awk '/Version/{print "ostree", $2}' | tr -d "'")" \
    "arbor=$(git -C "$HERE" describe --always --dirty 2>/dev/null || echo no-commit) commit=$C" \
    "runs=$RUNS cpus=$(nproc) $(date -u +%FT%TZ)"
  if part formats; then
    table
    python3 - "$RES" <<'PY'
import json, sys
res = sys.argv[1]
m = lambda n: json.load(open(f"{res}/{n}.json"))["results"][0]["median"]
one = sum(m(f"arbor.image-{f}") for f in ("raw", "qcow2", "erofs"))
allf = m("arbor.image-raw+qcow2+erofs")
r = allf / one
print(f"all three at once {allf:.2f} s vs one by one {one:.2f} s: {r:.2f}x (target <= 0.7x) {'ok' if r <= 0.7 else 'MISS'}")
PY
  fi
  if part alternative; then
    ratios 38 "
      raw+qcow2 vs loop+deploy+convert|ostree.loop-deploy-convert|arbor.image-raw+qcow2|>=2x faster|2
      raw+qcow2 vs the same, disk.raw synced|ostree.loop-deploy-convert-sync|arbor.image-raw+qcow2|>=2x faster|2"
  fi
  [ ! -e "$RES/boot.txt" ] || cat "$RES/boot.txt"
} | tee "$RES/image.txt"
