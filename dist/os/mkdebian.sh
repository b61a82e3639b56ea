#!/usr/bin/env bash
# Builds a minimal bootable Debian bookworm OS tree laid out for arbor (and ostree), and commits it.
#
#   dist/os/mkdebian.sh --repo REPO --ref REF [--arbor BIN] [--prepare-root BIN] [--extra DIR]...
#                       [--enable UNIT]... [--version V] [--ssh] [--tree-out DIR]
#
# Stage 1, cached (debootstrap, about 75 s and 800 MB with a reachable mirror): a bookworm minbase
# with the kernel (linux-image-amd64), systemd, udev, initramfs-tools and ostree (the interop peer
# on the booted machine), in $ARBOR_OS_CACHE (default /var/cache/arbor-os)/SUITE-<key>-<date>, where
# the key is a hash of everything stage 1 depends on (suite, mirror, package list, debootstrap's
# version, this recipe's version) and <date> the Date of the mirror's dists/SUITE/InRelease (when
# it cannot be fetched, the newest cached tree of the same key is used, and the script says so).
# Stage 1 holds a lock on the cache (concurrent runs wait) and runs debootstrap in its own mount
# namespace (a killed run leaves no /proc, /sys mounts in the half-built tree).
# Stage 2, every run (about a minute, most of it update-initramfs): a copy of that tree gets arbor
# (dist/install.sh: the binary, its units, the initramfs-tools hook and boot script, man pages and
# completions), the --extra trees (test units...), a small initramfs (virtio and ext4 modules
# only), and the ostree layout: /etc moved to /usr/etc, the kernel and initramfs under
# /usr/lib/modules/VERSION/, /home, /root, /opt, /srv, /mnt and /usr/local as symlinks into /var
# (as Fedora CoreOS lays them out, created at boot by tmpfiles.d), /var empty (its directories
# recreated at boot by tmpfiles.d, the dpkg database moved to /usr/lib/sysimage/dpkg with a
# /var/lib/dpkg link), /tmp a tmpfs (tmp.mount, as Fedora CoreOS), /sysroot and the
# /ostree -> sysroot/ostree symlink. Then `arbor commit` to REPO (bare, so run as root) on REF.
# The commit checksum is printed on stdout; everything else goes to stderr.
#
# Env: ARBOR_OS_CACHE, ARBOR_OS_MIRROR (default http://deb.debian.org/debian), SOURCE_DATE_EPOCH
# (the commit timestamp; default: the cached tree's build time, so rebuilding the same inputs gives
# the same commit).
set -euo pipefail
HERE=$(dirname "$(realpath "$0")")
TOP=$(realpath "$HERE/../..")
SUITE=bookworm
MIRROR=${ARBOR_OS_MIRROR:-http://deb.debian.org/debian}
CACHE=${ARBOR_OS_CACHE:-/var/cache/arbor-os}
RECIPE=4
PACKAGES=linux-image-amd64,systemd,systemd-sysv,udev,initramfs-tools,zstd,kmod,e2fsprogs,ostree
MODULES="virtio_pci virtio_blk virtio_scsi sd_mod ata_piix ext4 crc32c_generic"

repo= ref= arbor= prepare_root= version= ssh=0 tree_out=
extras=() enables=()
while [ $# -gt 0 ]; do
  case $1 in
    --repo) repo=$2; shift 2 ;;
    --ref) ref=$2; shift 2 ;;
    --arbor) arbor=$2; shift 2 ;;
    --prepare-root) prepare_root=$2; shift 2 ;;
    --extra) extras+=("$(realpath "$2")"); shift 2 ;;
    --enable) enables+=("$2"); shift 2 ;;
    --version) version=$2; shift 2 ;;
    --ssh) ssh=1; shift ;;
    --tree-out) tree_out=$2; shift 2 ;;
    -h|--help) sed -n '2,/^set -e/p' "$0" | sed 's/^# \{0,1\}//;$d'; exit 0 ;;
    *) echo "mkdebian.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
[ -n "$repo" ] && [ -n "$ref" ] || { echo "mkdebian.sh: --repo and --ref are required" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "mkdebian.sh: needs root (debootstrap, chroot, a bare repository)" >&2; exit 1; }
for t in debootstrap chroot unshare sha256sum flock curl; do
  command -v $t >/dev/null || { echo "mkdebian.sh: missing $t (apt-get install debootstrap util-linux coreutils curl)" >&2; exit 1; }
done
arbor=$(realpath "${arbor:-$TOP/target/release/arbor}")
[ -x "$arbor" ] || { echo "mkdebian.sh: no arbor binary at $arbor (cargo build --release)" >&2; exit 1; }
[ $ssh = 1 ] && PACKAGES=$PACKAGES,openssh-server
log() { echo "mkdebian: $*" >&2; }

# Stage 1: the cached debootstrap, under a lock (the VM tests and bench/image.sh both run this).
mkdir -p "$CACHE"
exec 9>"$CACHE/lock"
flock 9
dbs_version=$(dpkg-query -W -f='${Version}' debootstrap 2>/dev/null || debootstrap --version)
key=$(printf '%s\n' "$RECIPE" "$SUITE" "$MIRROR" "$PACKAGES" "$dbs_version" | sha256sum | cut -c1-16)
if release_date=$(curl -fsS --max-time 30 "$MIRROR/dists/$SUITE/InRelease" | sed -n 's/^Date: //p' | head -1) \
    && [ -n "$release_date" ]; then
  base=$CACHE/$SUITE-$key-$(date -u -d "$release_date" +%Y%m%dT%H%M%SZ)
else
  base=$(ls -d "$CACHE/$SUITE-$key"-*/done 2>/dev/null | LC_ALL=C sort | tail -1)
  base=${base%/done}
  [ -n "$base" ] || { echo "mkdebian.sh: cannot fetch $MIRROR/dists/$SUITE/InRelease, and no tree is cached" >&2; exit 1; }
  log "cannot fetch $MIRROR/dists/$SUITE/InRelease: using the newest cached tree, $base"
fi
if [ ! -e "$base/done" ]; then
  log "stage 1: debootstrap $SUITE ($PACKAGES) into $base (cached for later runs)"
  t0=$(date +%s)
  rm -rf "$base.tmp" && mkdir -p "$base.tmp"
  # Its own mount namespace: debootstrap mounts /proc and /sys in the target.
  unshare --mount --propagation private \
    debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$base.tmp/tree" "$MIRROR" >"$base.tmp/debootstrap.log" 2>&1 \
    || { tail -20 "$base.tmp/debootstrap.log" >&2; echo "mkdebian.sh: debootstrap failed (log: $base.tmp/debootstrap.log)" >&2; exit 1; }
  T=$base.tmp/tree
  rm -rf "$T"/var/cache/apt/archives/*.deb "$T"/var/lib/apt/lists/* "$T"/usr/share/doc/* "$T"/usr/share/man/* \
    "$T"/usr/share/locale/* "$T"/boot/initrd.img-*
  date +%s >"$base.tmp/built-at"
  rm -rf "$base" && mv "$base.tmp" "$base" && touch "$base/done"
  log "stage 1 took $(( $(date +%s) - t0 )) s"
fi
exec 9>&-
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(cat "$base/built-at")}

# Stage 2: a copy of the tree, arbor installed, initramfs, ostree layout, commit.
t0=$(date +%s)
W=$(mktemp -d /var/tmp/arbor-os.XXXXXX)
trap 'rm -rf "$W"' EXIT
T=$W/tree
cp -a "$base/tree" "$T"
kver=$(ls "$T/lib/modules")
[ "$(echo "$kver" | wc -w)" = 1 ] || { echo "mkdebian.sh: expected one kernel in the tree, found: $kver" >&2; exit 1; }

if [ -x "$TOP/dist/install.sh" ]; then
  ARBOR_BIN="$arbor" ARBOR_PREPARE_ROOT_BIN="$prepare_root" "$TOP/dist/install.sh" "$T" /usr >&2
else
  install -D -m 755 "$arbor" "$T/usr/bin/arbor"
  install -d "$T/usr/lib/systemd/system" && cp "$TOP"/dist/systemd/*.service "$T/usr/lib/systemd/system/"
  if [ -d "$TOP/dist/initramfs-tools" ]; then
    (cd "$TOP/dist/initramfs-tools" && find . -type f | while read -r f; do
      install -D -m 755 "$f" "$T/usr/share/initramfs-tools/$f"; done)
  fi
fi
if [ -n "$prepare_root" ]; then install -D -m 755 "$prepare_root" "$T/usr/lib/arbor/arbor-prepare-root"; fi
for f in usr/lib/arbor/arbor-prepare-root usr/share/initramfs-tools/hooks/arbor usr/share/initramfs-tools/scripts/local-bottom/arbor; do
  [ -e "$T/$f" ] || { echo "mkdebian.sh: /$f missing: the image could not boot (--prepare-root BIN, see the README)" >&2; exit 1; }
done
for x in "${extras[@]}"; do cp -a "$x/." "$T/"; done

# Configuration of the OS itself (before /etc moves).
echo arbor-vm >"$T/etc/hostname"
: >"$T/etc/machine-id"   # generated on first boot
printf 'LABEL=boot /boot ext4 defaults 0 2\n' >"$T/etc/fstab"
chroot "$T" passwd -d root >/dev/null   # console login for debugging; the tests never log in
printf '%s\n' $MODULES >"$T/etc/initramfs-tools/modules"
sed -i 's/^MODULES=.*/MODULES=list/; s/^COMPRESS=.*/COMPRESS=zstd/' "$T/etc/initramfs-tools/initramfs.conf"
ln -sfn /usr/lib/systemd/system/multi-user.target "$T/etc/systemd/system/default.target"
# arbor's own units are enabled in every image: automatic updates and the
# health checks by default (configure or mask them in /etc).
for u in arbor-agent.service arbor-health.service arbor-finalize-staged.service arbor-boot-complete.service; do
  [ -e "$T/usr/lib/systemd/system/$u" ] && enables+=("$u")
done
for u in "${enables[@]}"; do
  install -d "$T/etc/systemd/system/multi-user.target.wants"
  ln -sfn "/usr/lib/systemd/system/$u" "$T/etc/systemd/system/multi-user.target.wants/$u"
done

log "stage 2: update-initramfs for $kver"
unshare --mount --propagation private sh -c "
  mount -t proc proc '$T/proc' && mount -t sysfs sys '$T/sys' && mount --bind /dev '$T/dev' &&
  chroot '$T' update-initramfs -c -k '$kver' >/dev/null" >&2
[ -s "$T/boot/initrd.img-$kver" ] || { echo "mkdebian.sh: update-initramfs made no initramfs" >&2; exit 1; }

# The ostree layout.
M=$T/usr/lib/modules/$kver
mv "$T/boot/vmlinuz-$kver" "$M/vmlinuz"
mv "$T/boot/initrd.img-$kver" "$M/initramfs.img"
rm -rf "$T"/boot/* "$T"/vmlinuz* "$T"/initrd.img*
mv "$T/etc" "$T/usr/etc"
# No /etc in the commit: the deployment's /etc is made from /usr/etc (ostree refuses a tree with both)
for d in home:var/home root:var/roothome opt:var/opt srv:var/srv mnt:var/mnt media:run/media; do
  rm -rf "${T:?}/${d%%:*}" && ln -s "${d#*:}" "$T/${d%%:*}"
done
rm -rf "$T/usr/local" && ln -s ../var/usrlocal "$T/usr/local"
install -d "$T/usr/lib/tmpfiles.d"
cat >"$T/usr/lib/tmpfiles.d/arbor-layout.conf" <<'EOF'
# The directories the ostree layout moves into /var (arbor's OS tree, dist/os/mkdebian.sh).
d /var/home 0755 root root -
d /var/roothome 0700 root root -
d /var/opt 0755 root root -
d /var/srv 0755 root root -
d /var/mnt 0755 root root -
d /var/usrlocal 0755 root root -
d /var/usrlocal/bin 0755 root root -
d /run/media 0755 root root -
EOF
# /var is the stateroot's, empty in a new one: the dpkg database moves under /usr (read-only with
# the rest of the OS, as rpm-ostree's /usr/share/rpm), and every other directory of the tree's
# /var is recreated at boot by tmpfiles.d with its mode and owner (/var/log/journal 2755
# root:systemd-journal, ...), unless a tmpfiles.d line of the OS already creates it.
install -d "$T/usr/lib/sysimage"
mv "$T/var/lib/dpkg" "$T/usr/lib/sysimage/dpkg"
known=$(cat "$T"/usr/lib/tmpfiles.d/*.conf | awk '$1 ~ /^[dDvqQLC]/ { print $2 }')
{
  echo "# The directories of the OS tree's /var (arbor's OS tree, dist/os/mkdebian.sh)."
  echo "L /var/lib/dpkg - - - - ../../usr/lib/sysimage/dpkg"
  # Owners by name, from the tree's own passwd and group (already under /usr/etc).
  (cd "$T" && find var -mindepth 1 -type d -printf 'd /%p %m %U %G -\n') | LC_ALL=C sort -k2,2 \
    | awk -v known="$known" -v passwd="$T/usr/etc/passwd" -v group="$T/usr/etc/group" '
        BEGIN {
          n = split(known, k, "\n"); for (i = 1; i <= n; i++) seen[k[i]] = 1
          FS = ":"; while ((getline l < passwd) > 0) { split(l, f); user[f[3]] = f[1] }
          while ((getline l < group) > 0) { split(l, f); grp[f[3]] = f[1] }
          FS = " "
        }
        !($2 in seen) { if ($4 in user) $4 = user[$4]; if ($5 in grp) $5 = grp[$5]; print }'
} >"$T/usr/lib/tmpfiles.d/arbor-var.conf"
rm -rf "$T/var" && mkdir -m 755 "$T/var"
# /tmp: a tmpfs at boot (Debian ships tmp.mount disabled); the directory is its mount point.
rm -rf "$T/tmp" && mkdir -m 1777 "$T/tmp"
ln -sfn /usr/share/systemd/tmp.mount "$T/usr/etc/systemd/system/tmp.mount"
install -d "$T/usr/etc/systemd/system/local-fs.target.wants"
ln -sfn /usr/share/systemd/tmp.mount "$T/usr/etc/systemd/system/local-fs.target.wants/tmp.mount"
rm -rf "$T/sysroot" && mkdir -m 755 "$T/sysroot"
rm -rf "$T/ostree" && ln -s sysroot/ostree "$T/ostree"
rm -rf "${T:?}"/proc/* "${T:?}"/sys/* "${T:?}"/dev/* "${T:?}"/run/*
[ -z "$tree_out" ] || { rm -rf "$tree_out" && cp -a "$T" "$tree_out"; }

[ -d "$repo/objects" ] || "$arbor" init --repo "$repo" --mode bare >&2
meta=(--add-metadata-string "version=${version:-$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y%m%d.%H%M%S)}")
csum=$("$arbor" commit --repo "$repo" -b "$ref" -s "Debian $SUITE for arbor ($kver)" \
  --timestamp "@$SOURCE_DATE_EPOCH" "${meta[@]}" "$T")
log "stage 2 took $(( $(date +%s) - t0 )) s: $ref = $csum"
echo "$csum"
